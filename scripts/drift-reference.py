"""Drift metrics by SciPy and NumPy for the data in a JSON file (reference, current, edges,
categorical counts): the independent implementation Sluice's are checked against.
Usage: drift-reference.py INPUT.json"""
import json
import sys

import numpy as np
from scipy import stats
from scipy.spatial import distance

data = json.load(open(sys.argv[1]))
ref, cur = np.array(data["reference"]), np.array(data["current"])
edges = np.concatenate([[-np.inf], data["edges"], [np.inf]])
ref_counts, _ = np.histogram(ref, bins=edges)
cur_counts, _ = np.histogram(cur, bins=edges)


def psi(r, c):
    r = np.maximum(r / r.sum(), 1e-4)
    c = np.maximum(c / c.sum(), 1e-4)
    return float(np.sum((c - r) * np.log(c / r)))


cat_ref, cat_cur = np.array(data["cat_reference"], dtype=float), np.array(data["cat_current"], dtype=float)
expected = np.maximum(cat_ref / cat_ref.sum(), 1e-4) * cat_cur.sum()
expected *= cat_cur.sum() / expected.sum()
chi = stats.chisquare(cat_cur, expected)
print(json.dumps({
    "ref_counts": ref_counts.tolist(),
    "cur_counts": cur_counts.tolist(),
    "psi": psi(ref_counts, cur_counts),
    "js": float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())),
    "ks": float(stats.ks_2samp(ref, cur).statistic),
    "wasserstein": float(stats.wasserstein_distance(ref, cur)),
    "normalized_wasserstein": float(stats.wasserstein_distance(ref, cur) / np.std(ref)),
    "cat_js": float(distance.jensenshannon(cat_ref / cat_ref.sum(), cat_cur / cat_cur.sum())),
    "cat_psi": psi(cat_ref, cat_cur),
    "chi2": float(chi.statistic),
    "chi2_p": float(chi.pvalue),
}))
