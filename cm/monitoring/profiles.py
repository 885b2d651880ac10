"""Workload profiles: runs grouped by their standardized features with scikit-learn's KMeans.

The number of profiles is the one with the best silhouette, one if no split
reaches MIN_SILHOUETTE (or ``--k``); a profile is named for its members' usual
bottleneck.  Each
profile keeps its centre and the spread of its members per feature; a run is
compared with its nearest profile by a diagonal Mahalanobis distance, and it
deviates when that distance is beyond the profile's threshold: the larger of
the chi-square 99.9 % quantile (as if features were normal) and 1.5 times its
farthest member.  The model is stored as plain JSON: checking needs no
scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any

from cm.errors import NotFound, UsageError
from cm.monitoring import bottleneck, features as feats

SPREAD_FLOOR = 0.25
MIN_SILHOUETTE = 0.5  # standardized units: a profile of near-identical runs still tolerates noise
PROFILE_COLUMNS = ["profile", "runs", "size", "cpu", "demand", "mem", "disk", "disk_busy", "net", "threshold"]


def _sklearn() -> Any:
    try:
        import numpy as np
        from scipy.stats import chi2
        from sklearn.cluster import KMeans
        from sklearn.metrics import silhouette_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise UsageError("profile learn needs scikit-learn: pip install 'cm[monitor]'") from None
    return np, chi2, KMeans, silhouette_score, StandardScaler


def _choose_k(Z: Any, wanted: int | None, KMeans: Any, silhouette_score: Any) -> tuple[int, float | None, Any]:
    n = len(Z)
    if wanted is not None:
        if not 1 <= wanted <= n:
            raise UsageError(f"--k must be between 1 and the number of runs ({n})")
        model = KMeans(n_clusters=wanted, n_init=10, random_state=0).fit(Z)
        return wanted, None, model.labels_
    found: tuple[int, float | None, Any] = (1, None, [0] * n)
    for k in range(2, min(8, n - 1) + 1):
        model = KMeans(n_clusters=k, n_init=10, random_state=0).fit(Z)
        if len(set(model.labels_)) < 2:
            continue
        score = float(silhouette_score(Z, model.labels_))
        if found[1] is None or score > found[1]:
            found = (k, score, model.labels_)
    # A weak best split is noise cut in two: one profile then.
    return found if found[1] is not None and found[1] >= MIN_SILHOUETTE else (1, found[1], [0] * n)


def _distance(z: list[float], center: list[float], spread: list[float]) -> float:
    return math.sqrt(sum(((a - c) / s) ** 2 for a, c, s in zip(z, center, spread)))


def learn(store: Any, names: list[str] | None, k: int | None = None) -> dict[str, Any]:
    """Learn profiles from the named runs (all runs when None); return the model to store."""
    np, chi2, KMeans, silhouette_score, StandardScaler = _sklearn()
    runs = store.runs(names)
    if names:
        missing = sorted(set(names) - {r["name"] for r in runs})
        if missing:
            raise NotFound(f"unknown run '{', '.join(missing)}' (see `cm monitor run list`)")
    if len(runs) < 2:
        raise UsageError("profiles are learnt from at least 2 runs (record some with `cm monitor run add`)")
    described = [feats.of_run(store, r) for r in runs]
    X = np.array([feats.vector(f) for f in described])
    scaler = StandardScaler().fit(X)
    Z = scaler.transform(X)
    chosen, silhouette, labels = _choose_k(Z, k, KMeans, silhouette_score)
    floor = math.sqrt(chi2.ppf(0.999, len(feats.VECTOR)))
    profiles = []
    for label in sorted(set(int(x) for x in labels)):
        members = Z[np.array(labels) == label]
        center = members.mean(axis=0)
        spread = np.maximum(members.std(axis=0), SPREAD_FLOOR)
        farthest = max(_distance(list(m), list(center), list(spread)) for m in members)
        raw = X[np.array(labels) == label].mean(axis=0)
        profiles.append({"center": center.tolist(), "spread": spread.tolist(), "raw": raw.tolist(),
                         "threshold": max(floor, 1.5 * farthest),
                         "runs": [r["name"] for r, l in zip(runs, labels) if int(l) == label]})
    reference = bottleneck.reference(described)
    _name(profiles, {r["name"]: bottleneck.find(f, reference)["bottleneck"] for r, f in zip(runs, described)})
    return {"features": list(feats.VECTOR), "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "k": chosen, "silhouette": silhouette, "profiles": profiles, "pressure": reference}


def _name(profiles: list[dict[str, Any]], bottlenecks: dict[str, str]) -> None:
    """Name each profile for its members' usual bottleneck: cpu-bound, disk-bound, ... or light."""
    from collections import Counter

    taken: Counter[str] = Counter()
    for profile in profiles:
        usual = Counter(bottlenecks[run] for run in profile["runs"]).most_common(1)[0][0]
        base = "light" if usual == "none" else f"{usual}-bound"
        taken[base] += 1
        profile["name"] = base if taken[base] == 1 else f"{base}-{taken[base]}"


def stored(store: Any) -> dict[str, Any]:
    model = store.model()
    if not model:
        raise NotFound("no profiles learnt yet (run `cm monitor profile learn`)")
    return model


def profile_rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    from cm.monitoring.dashboard import human

    rows = []
    for p in model["profiles"]:
        raw = dict(zip(model["features"], p["raw"]))
        rows.append({"profile": p["name"], "runs": ", ".join(p["runs"]), "size": len(p["runs"]),
                     "cpu": f"{raw['cpu']:.0%}", "demand": f"{raw['demand']:.0%}", "mem": f"{raw['mem']:.0%}",
                     "disk": human(10 ** raw["disk_log"] - 1, "B/s"), "disk_busy": f"{raw['disk_busy']:.2f}",
                     "net": human(10 ** raw["net_log"] - 1, "B/s"), "threshold": round(p["threshold"], 2)})
    return rows


def check(store: Any, name: str) -> dict[str, Any]:
    """The run's nearest profile, whether it deviates, the features that deviate most, and its bottleneck."""
    model = stored(store)
    found = store.runs([name])
    if not found:
        raise NotFound(f"unknown run '{name}' (see `cm monitor run list`)")
    described = feats.of_run(store, found[0])
    z = [(v - m) / s for v, m, s in zip(feats.vector(described), model["mean"], model["scale"])]
    scored = sorted(((_distance(z, p["center"], p["spread"]), p) for p in model["profiles"]), key=lambda x: x[0])
    distance, nearest = scored[0]
    off = sorted(((abs(a - c) / s, f, a - c) for f, a, c, s in zip(model["features"], z, nearest["center"],
                                                                     nearest["spread"])), reverse=True)
    found_bottleneck = bottleneck.find(described, model["pressure"])
    return {"run": name, "profile": nearest["name"], "distance": round(distance, 2),
            "threshold": round(nearest["threshold"], 2), "deviates": distance > nearest["threshold"],
            "deviation": ", ".join(f"{f} {'high' if d > 0 else 'low'} ({n:.1f} spreads)" for n, f, d in off[:2]),
            **found_bottleneck, **bottleneck.figures(described)}
