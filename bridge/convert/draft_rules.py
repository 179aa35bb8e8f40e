"""Turn key pairs into the fewest rules of the rule language (``bridge.convert.rules``).

Each pair ``source -> target`` is cut into a common literal head, a changed middle and a common tail (dotted
parts).  The head and middle become an anchored regex whose numbers are captured, the target's head and middle
a template; pairs with the same regex and template shape (numbers abstracted) form one group.  A target number
is taken from a captured source number plus a constant offset (``res{k}`` -> ``layer{k-1}``) or is a literal;
when no single offset explains a group, it is split on the source number that decides it (``layers.1`` ->
``.2``).  A few members that contradict an offset most members agree on are outvoted: the rule's name wins.
Rules whose regex also matches other rules' keys run in a later stage (specific before general); a rule that
would rename a key no pair renames gets a look-ahead on the tail, or is marked low confidence.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

_NUM = re.compile(r"\d+")
#: Share of a group that must agree on an offset for the rest to be outvoted.
_MAJORITY = 0.75


@dataclass
class Draft:
    """One drafted rule: its rule-language spec and the pairs it covers."""

    kind: str  # rename | drop_alias
    regex: str
    template: str
    members: list[tuple[str, str]]
    confidence: float
    outvoted: list[tuple[str, str]] = field(default_factory=list)  # pairs whose target the rule overrides
    stage: int = 0
    note: str = ""


def _cut(s: str, t: str) -> tuple[list[str], list[str], bool] | None:
    """(source head+middle, target head+middle, has tail) of a pair, or None when the names are equal."""
    sp, tp = s.split("."), t.split(".")
    if sp == tp:
        return None
    head = 0
    while head < min(len(sp), len(tp)) and sp[head] == tp[head]:
        head += 1
    tail = 0
    while tail < min(len(sp), len(tp)) - head and sp[-1 - tail] == tp[-1 - tail]:
        tail += 1
    if len(sp) - tail <= head:  # nothing of the source changes (insertion): take one more part into the middle
        if tail:
            tail -= 1
        else:
            head -= 1
    return sp[: len(sp) - tail], tp[: len(tp) - tail], tail > 0


def _shape(parts: list[str]) -> tuple[str, list[int]]:
    """Parts joined with numbers replaced by ``#``, and the numbers."""
    text = ".".join(parts)
    return _NUM.sub("#", text), [int(n) for n in _NUM.findall(text)]


@dataclass
class _Group:
    kind: str
    sshape: str
    tshape: str
    tail: bool
    members: list[tuple[str, str, list[int], list[int]]]  # (source, target, source numbers, target numbers)


def _target_map(members: list, j: int) -> tuple[tuple, float]:
    """Best explanation of target number ``j``: ("lit", value) or ("ref", i, offset), and the share it explains."""
    votes: Counter[tuple] = Counter()
    for _, _, ns, nt in members:
        votes[("lit", nt[j])] += 1
        for i, n in enumerate(ns):
            votes[("ref", i, nt[j] - n)] += 1

    def rank(item: tuple[tuple, int]) -> tuple:
        how, n = item
        lit = how[0] == "lit"
        return (n, not lit, how[-1] == 0 if not lit else False, -abs(how[-1]) if not lit else 0)

    best, n = max(votes.items(), key=rank)
    return best, n / len(members)


def _explained(members: list) -> bool:
    """True when every target number of ``members`` has one explanation (or a majority one to outvote with)."""
    for j in range(len(members[0][3])):
        _, share = _target_map(members, j)
        if share < 1.0 and not (share >= _MAJORITY and len(members) >= 4):
            return False
    return True


def _split_position(members: list, j: int) -> int | None:
    """A source number position to split a group on: one whose value decides target number ``j`` (a
    functional dependency), else one after which every part is explained; the fewest parts win."""
    options = []
    for i in range(len(members[0][2])):
        seen: dict[int, int] = {}
        if all(seen.setdefault(ns[i], nt[j]) == nt[j] for _, _, ns, nt in members):
            options.append((len(seen), i))
    if options:
        return min(options)[1]
    for i in range(len(members[0][2])):
        parts: dict[int, list] = defaultdict(list)
        for m in members:
            parts[m[2][i]].append(m)
        if len(parts) > 1 and all(_explained(part) for part in parts.values()):
            options.append((len(parts), i))
    return min(options)[1] if options else None


def _render(group: _Group, members: list, maps: list[tuple]) -> tuple[str, str]:
    """Regex and template of a group whose target numbers are explained by ``maps``."""
    ns_all = [m[2] for m in members]
    constant = [len({ns[i] for ns in ns_all}) == 1 for i in range(len(ns_all[0]))]
    captured: dict[int, int] = {}
    pieces = re.split(r"(#)", group.sshape)
    regex, pos = "", 0
    for piece in pieces:
        if piece == "#":
            if constant[pos]:
                regex += str(ns_all[0][pos])
            else:
                captured[pos] = len(captured) + 1
                regex += r"(\d+)"
            pos += 1
        else:
            regex += re.escape(piece)
    regex = "^" + regex + (r"\." if group.tail else "$")
    template, pos = "", 0
    for piece in re.split(r"(#)", group.tshape):
        if piece != "#":
            template += piece.replace("{", "{{").replace("}", "}}")
            continue
        how = maps[pos]
        if how[0] == "lit" or constant[how[1]]:
            value = how[1] if how[0] == "lit" else ns_all[0][how[1]] + how[2]
            template += str(value)
        else:
            g, off = captured[how[1]], how[2]
            template += f"{{{g}}}" if off == 0 else f"{{{g}{'+' if off > 0 else '-'}{abs(off)}}}"
        pos += 1
    if group.tail and template:
        template += "."
    return regex, template


def _predict(members: list, maps: list[tuple]) -> dict[str, list[int]]:
    """Target numbers the rule gives each member's source key."""
    out = {}
    for s, _, ns, _ in members:
        out[s] = [how[1] if how[0] == "lit" else ns[how[1]] + how[2] for how in maps]
    return out


def _generalise_group(group: _Group, confidence: dict[str, float]) -> list[Draft]:
    members = group.members
    nt_len = len(members[0][3])
    maps: list[tuple] = []
    for j in range(nt_len):
        how, share = _target_map(members, j)
        if share < 1.0 and not (share >= _MAJORITY and len(members) >= 4):
            i = _split_position(members, j)
            buckets: dict[object, list] = defaultdict(list)
            for m in members:
                buckets[m[2][i] if i is not None else tuple(m[2])].append(m)
            if len(buckets) > 1:
                out: list[Draft] = []
                for part in buckets.values():
                    out.extend(
                        _generalise_group(_Group(group.kind, group.sshape, group.tshape, group.tail, part), confidence)
                    )
                return out
        maps.append(how)
    regex, template = _render(group, members, maps)
    predicted = _predict(members, maps)
    outvoted = [(s, t) for s, t, _, nt in members if predicted[s] != nt]
    conf = sum(confidence.get(s, 1.0) for s, *_ in members) / len(members)
    conf = min(1.0, conf + 0.1 * min(len(members) - 1, 3)) if len(members) > 1 else conf * 0.8
    if outvoted:
        conf *= 1 - len(outvoted) / len(members)
    pairs = [(s, t) for s, t, _, _ in members]
    note = f"outvoted {len(outvoted)} pair(s)" if outvoted else ""
    return [Draft(group.kind, regex, template, pairs, round(conf, 2), outvoted, note=note)]


def generalise(pairs: dict[str, str], confidence: dict[str, float], kind: str = "rename") -> list[Draft]:
    """The fewest rules of ``kind`` (rename, drop_alias) that map every ``source`` of ``pairs`` to its value."""
    groups: dict[tuple, _Group] = {}
    for s, t in pairs.items():
        cut = _cut(s, t)
        if cut is None:
            continue
        sparts, tparts, tail = cut
        sshape, ns = _shape(sparts)
        tshape, nt = _shape(tparts)
        key = (sshape, tshape, tail)
        groups.setdefault(key, _Group(kind, sshape, tshape, tail, [])).members.append((s, t, ns, nt))
    drafts: list[Draft] = []
    for group in groups.values():
        drafts.extend(_generalise_group(group, confidence))
    return drafts


def _lookahead(rule: Draft, foreign: list[str]) -> bool:
    """Add a look-ahead on the first tail parts of the rule's keys (numbers as ``\\d+``, at most four
    alternatives) that keeps ``foreign`` keys out; True when one does."""
    pattern = re.compile(rule.regex)
    rests = []
    for s, _ in rule.members:
        m = pattern.search(s)
        rests.append(s[m.end() :].split("."))
    depth = min(len(r) for r in rests)
    for n in range(1, depth + 1):
        shapes = sorted({".".join(_NUM.sub("#", p) for p in r[:n]) for r in rests})
        if len(shapes) > 4:
            return False
        looks = [re.escape(x).replace("\\#", "#").replace("#", r"\d+") for x in shapes]
        look = looks[0] if len(looks) == 1 else "(?:" + "|".join(looks) + ")"
        candidate = f"{rule.regex}(?={look}(?:\\.|$))"
        compiled = re.compile(candidate)
        if not any(compiled.search(k) for k in foreign):
            rule.regex = candidate
            return True
    return False


def order_stages(drafts: list[Draft], source_keys: list[str], untouched: set[str]) -> None:
    """Give each rule a stage so that no two rules of a stage match one key: specific rules run first.

    ``untouched`` are source keys no rule of ``drafts`` may match (paired under their own name, or any key a
    drop_alias rule does not cover): a rule matching one gets a look-ahead, else it is marked low confidence.
    """
    owner: dict[str, int] = {}
    for n, d in enumerate(drafts):
        for s, _ in d.members:
            owner[s] = n
    after: dict[int, set[int]] = defaultdict(set)
    for n, d in enumerate(drafts):
        hits = [k for k in source_keys if re.search(d.regex, k)]
        own = {s for s, _ in d.members}
        foreign = [k for k in hits if k not in own and (k in untouched or d.kind == "drop_alias")]
        if foreign and not _lookahead(d, foreign):
            d.confidence = round(d.confidence * 0.5, 2)
            d.note = (d.note + "; " if d.note else "") + f"also matches {len(foreign)} other key(s), e.g. {foreign[0]}"
        pattern = re.compile(d.regex)
        for k in hits:
            if k in owner and owner[k] != n and pattern.search(k):
                after[n].add(owner[k])
    level: dict[int, int] = {}

    def depth(n: int, trail: frozenset[int]) -> int:
        if n in level:
            return level[n]
        deps = [m for m in after[n] if m not in trail]
        level[n] = 1 + max((depth(m, trail | {n}) for m in deps), default=-1)
        return level[n]

    for n, d in enumerate(drafts):
        d.stage = 0 if d.kind == "drop_alias" else depth(n, frozenset({n}))
