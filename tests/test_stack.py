"""The real stack that `make setup` builds: each framework imports, runs on the CPU, and the
five breakages of detectron2 0.6 on this stack (docs/STACK.md) stay fixed."""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def test_mmcv_compiled_ops_run_on_cpu() -> None:
    from mmcv import _ext  # noqa: F401  (the compiled extension itself)
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    features = torch.arange(64.0).reshape(1, 1, 8, 8)
    pooled = roi_align(features, torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), (2, 2), 1.0, 0, "avg", True)
    assert pooled.shape == (1, 1, 2, 2)


def test_frameworks_import() -> None:
    import detectron2
    import detectron2.data
    import mmcv
    import mmdet
    import mmdet.datasets
    import mmengine
    import panopticapi.evaluation  # noqa: F401
    import pycocotools.coco  # noqa: F401

    assert (detectron2.__version__, mmcv.__version__, mmdet.__version__, mmengine.__version__) == (
        "0.6",
        "2.1.0",
        "3.3.0",
        "0.10.7",
    )


def test_detectron2_panoptic_fpn_builds_and_runs_on_cpu() -> None:
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8), "height": 64, "width": 96}])
    assert set(outputs[0]) >= {"panoptic_seg", "instances", "sem_seg"}


def test_mmdet_panoptic_fpn_builds_from_an_inheriting_config() -> None:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    # `mmdet::` inheritance resolves through pkg_resources: setuptools must stay < 81
    cfg = Config.fromstring("_base_ = 'mmdet::panoptic_fpn/panoptic-fpn_r50_fpn_1x_coco.py'\n", ".py")
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    assert len(model.state_dict()) > 300


def test_detectron2_C_stand_in_answers_collect_env_and_names_missing_ops() -> None:
    from detectron2 import _C
    from detectron2.utils.collect_env import collect_env_info

    assert "not compiled" in _C.get_compiler_version()
    assert _C.has_cuda() is False
    assert "not compiled" in collect_env_info()
    assert not hasattr(_C, "deform_conv_forward")  # optional-op probes see it missing
    assert getattr(_C, "deform_conv_forward", None) is None
    with pytest.raises(AttributeError, match="deform_conv_forward is a compiled op") as missing:
        _C.deform_conv_forward  # noqa: B018
    assert isinstance(missing.value, _C.CompiledOpMissing) and missing.value.name == "deform_conv_forward"
    with pytest.raises(ImportError, match="deform_conv_forward"):
        from detectron2._C import deform_conv_forward  # noqa: F401


# numpy names detectron2 0.6 could use that numpy 2 lacks or lacked (np.int, ... went in 1.24, the rest in 2.0;
# 2.0 brought back np.bool as np.bool_, upstream detectron2 uses the builtins anyway).
REMOVED_NUMPY_NAMES = (
    "int",
    "float",
    "bool",
    "object",
    "str",
    "long",
    "unicode",
    "complex",
    "float_",
    "complex_",
    "unicode_",
    "string_",
    "bool8",
    "object0",
    "int0",
    "uint0",
    "cfloat",
    "longfloat",
    "singlecomplex",
    "clongfloat",
    "longcomplex",
    "Inf",
    "Infinity",
    "NaN",
    "NAN",
    "infty",
    "PINF",
    "NINF",
    "PZERO",
    "NZERO",
    "round_",
    "product",
    "cumproduct",
    "alltrue",
    "sometrue",
    "asfarray",
    "msort",
    "find_common_type",
)
REMOVED_NUMPY_USE = re.compile(r"\b(?:np|numpy)\.(?:" + "|".join(REMOVED_NUMPY_NAMES) + r")\b")


def test_installed_detectron2_uses_no_numpy_name_numpy2_removed() -> None:
    import detectron2

    package = Path(detectron2.__file__).parent
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if REMOVED_NUMPY_USE.search(line)
    ]
    assert not found, (
        "numpy names removed in numpy 2 (fix them in patches/detectron2-0.6-pure-python.patch):\n" + "\n".join(found)
    )
    assert REMOVED_NUMPY_USE.search("x = np.zeros(3, dtype=np.int)") and not REMOVED_NUMPY_USE.search("np.int64")


def test_detectron2_numpy2_fixed_paths_run() -> None:
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.structures import BitMasks, PolygonMasks

    print_instances_class_histogram([{"annotations": [{"category_id": 0}, {"category_id": 1}]}], ["a", "b"])
    masks = PolygonMasks([[np.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0])], []])
    assert masks.nonempty().tolist() == [True, False]
    assert BitMasks.from_polygon_masks(masks, 8, 8).tensor.dtype == torch.bool


def test_detectron2_visualizer_draws_panoptic_segments() -> None:
    from detectron2.data import MetadataCatalog
    from detectron2.utils.visualizer import ColorMode, Visualizer

    ids = torch.zeros((32, 48), dtype=torch.int32)  # 0 = void: kept gray by IMAGE_BW (non_empty_mask)
    ids[4:20, 4:20] = 1
    ids[20:, :] = 2
    segments = [{"id": 1, "category_id": 0, "isthing": True}, {"id": 2, "category_id": 1, "isthing": False}]
    image = np.full((32, 48, 3), 128, dtype=np.uint8)
    metadata = MetadataCatalog.get("coco_2017_val_panoptic_separated")  # detectron2's builtin metadata
    drawn = Visualizer(image, metadata, instance_mode=ColorMode.IMAGE_BW).draw_panoptic_seg(ids, segments)
    assert drawn.get_image().shape == (32, 48, 3)
    assert not np.array_equal(drawn.get_image()[28, 40], image[28, 40])  # the stuff segment is painted


def test_detectron2_sem_seg_evaluator_scores_a_prediction(tmp_path: Path) -> None:
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    truth = np.zeros((6, 8), dtype=np.uint8)
    truth[:, 4:] = 1
    truth[0, 0] = 255
    Image.fromarray(truth).save(tmp_path / "gt.png")
    name = "bridge_test_stack_sem_seg"
    DatasetCatalog.register(
        name, lambda: [{"file_name": str(tmp_path / "image.jpg"), "sem_seg_file_name": str(tmp_path / "gt.png")}]
    )
    MetadataCatalog.get(name).set(stuff_classes=["left", "right"], ignore_label=255)
    try:
        evaluator = SemSegEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))
        evaluator.reset()
        prediction = torch.zeros((2, 6, 8))
        prediction[1, :, 6:] = 1.0  # "right" predicted from column 6 on: columns 4-5 are wrong
        evaluator.process([{"file_name": str(tmp_path / "image.jpg")}], [{"sem_seg": prediction}])
        results = evaluator.evaluate()["sem_seg"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    # 47 labelled pixels; left: 23 true + 12 wrongly predicted -> IoU 23/35; right: 12 of 24 -> IoU 12/24
    assert results["IoU-left"] == pytest.approx(100 * 23 / 35)
    assert results["IoU-right"] == pytest.approx(50.0)
    assert results["pACC"] == pytest.approx(100 * 35 / 47)
    assert (tmp_path / "eval" / "sem_seg_evaluation.pth").exists()


def test_detectron2_pascal_voc_loader_reads_a_split(tmp_path: Path) -> None:
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("000001\n000002\n")
    for fileid in ("000001", "000002"):
        (tmp_path / "Annotations" / f"{fileid}.xml").write_text(
            "<annotation><size><width>20</width><height>10</height></size><object><name>dog</name>"
            "<difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>8</xmax><ymax>9</ymax></bndbox>"
            "</object></annotation>"
        )
    records = load_voc_instances(str(tmp_path), "val", ["cat", "dog"])  # np.loadtxt(dtype=np.str) before the patch
    assert [r["image_id"] for r in records] == ["000001", "000002"]
    assert records[0]["annotations"][0]["category_id"] == 1


def _run_in_fresh_python(code: str, tmp_path: Path) -> dict:
    """Run ``code`` (it prints one JSON object last) in a new interpreter: detectron2's once-per-process
    flag and logging start clean, whatever other tests did."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# Builds COCOEvaluator twice on a synthetic COCO, with a handler on detectron2's coco_evaluation logger itself.
COCO_EVALUATOR_TWICE = textwrap.dedent("""
    import io, json, logging
    from bridge.coco.synthetic import write_synthetic_coco
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.evaluation.coco_evaluation import _compiled_coco_eval_available

    log = io.StringIO()
    logger = logging.getLogger("detectron2.evaluation.coco_evaluation")
    logger.addHandler(logging.StreamHandler(log))
    logger.setLevel(logging.INFO)
    coco = write_synthetic_coco("coco", num_images=1)
    register_coco_instances("fallback", {}, str(coco.root / "annotations" / "instances_val2017.json"),
                            str(coco.root / "val2017"))
    fast = [COCOEvaluator("fallback", output_dir="eval")._use_fast_impl for _ in range(2)]
    print(json.dumps({"available": _compiled_coco_eval_available(), "fast": fast, "log": log.getvalue()}))
""")


def test_coco_evaluator_falls_back_to_pycocotools_and_says_so_once(tmp_path: Path) -> None:
    seen = _run_in_fresh_python(COCO_EVALUATOR_TWICE, tmp_path)
    assert seen["available"] is False and seen["fast"] == [False, False]
    assert seen["log"].count("using pycocotools' official COCOeval") == 1


def test_coco_evaluator_keeps_the_fast_path_when_the_compiled_ops_exist(tmp_path: Path) -> None:
    """A detectron2 whose ``_C`` has the compiled COCOeval ops (here a module standing in for the compiled
    extension, put in its place before detectron2.evaluation is imported) gets no fallback and no message."""
    compiled = (
        "import sys, types, detectron2\n"
        "compiled = types.ModuleType('detectron2._C')\n"
        "compiled.COCOevalAccumulate = compiled.COCOevalEvaluateImages = print\n"
        "sys.modules['detectron2._C'] = detectron2._C = compiled\n"
    )
    seen = _run_in_fresh_python(compiled + COCO_EVALUATOR_TWICE, tmp_path)
    assert seen["available"] is True and seen["fast"] == [True, True]
    assert "COCOeval" not in seen["log"]


def test_detectron2_projects_and_tensorboard_are_installed() -> None:
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from detectron2.projects.panoptic_deeplab import add_panoptic_deeplab_config  # noqa: F401
    from detectron2.projects.point_rend import add_pointrend_config  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    cfg = get_cfg()
    add_deeplab_config(cfg)
    assert "POLY_LR_POWER" in cfg.SOLVER


def test_installed_detectron2_is_built_from_this_checkouts_patches() -> None:
    """scripts/build_detectron2.sh stamps the package with a sha256 over patches/* and itself, and rebuilds
    when the stamp differs: a patch changed without a rebuild would leave the old detectron2 installed."""
    import detectron2

    files = sorted(str(path.relative_to(REPO)) for path in (REPO / "patches").iterdir())
    files.append("scripts/build_detectron2.sh")
    listing = "".join(f"{hashlib.sha256((REPO / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
    stamp = hashlib.sha256(listing.encode()).hexdigest()[:12]
    installed = (Path(detectron2.__file__).parent / "BRIDGE_BUILD").read_text()
    assert stamp in installed, f"installed: {installed.strip()!r}, this checkout: {stamp}: run `make setup`"


def declared_install_requires() -> list[Requirement]:
    """install_requires of the sdist's own setup.py, kept by `make setup` in .venv/share/detectron2-0.6-sdist/."""
    setup_py = Path(sys.prefix) / "share" / "detectron2-0.6-sdist" / "setup.py"
    assert setup_py.exists(), f"{setup_py} is missing: run `make setup`"
    for node in ast.walk(ast.parse(setup_py.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(text) for text in ast.literal_eval(node.value)]
    raise AssertionError(f"{setup_py} has no install_requires")


def test_every_dependency_detectron2_declares_is_installed() -> None:
    """Each install_requires entry applies and is installed at a version it allows. The one exception is
    `dataclasses`, declared for Python < 3.7 only (its marker); no version is exempt."""
    requirements = declared_install_requires()
    applicable = [r for r in requirements if r.marker is None or r.marker.evaluate()]
    assert [r.name for r in requirements if r not in applicable] == ["dataclasses"]
    problems = []
    for requirement in applicable:
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: {version} installed")
    assert not problems, problems
    assert "black==21.4b2" in [str(r) for r in applicable] and len(applicable) == 16


def test_black_formats_detectron2_lazy_configs() -> None:
    """detectron2 uses black's library API (LazyConfig.to_py); black 21.4b2, as declared, does that on 3.11."""
    from detectron2 import model_zoo
    from detectron2.config import LazyConfig

    code = LazyConfig.to_py(LazyConfig.load(model_zoo.get_config_file("common/optim.py")))
    assert code.startswith("cfg.") and "(\n    " in code  # black split the long call over lines
