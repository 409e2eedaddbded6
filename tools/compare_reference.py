"""McNemar reference values for tests/test_compare.c.

Needs: scipy (1.17.1 was used), numpy.  Rerun from the repository root:
    /tmp/lmenv/bin/python tools/compare_reference.py > tests/fixtures/compare/mcnemar.json

For each (b, c) = (pairs only the base got right, pairs only the candidate got right):
  p_exact: scipy.stats.binomtest(min(b, c), b + c, 0.5), two-sided
  chi2:    (|b - c| - 1)^2 / (b + c), continuity-corrected, and its chi-square(1) survival
"""
import json

from scipy import stats

CASES = [(0, 0), (1, 0), (0, 1), (3, 3), (5, 0), (10, 2), (2, 10), (12, 20), (40, 25),
         (100, 70), (7, 1), (500, 430), (2000, 1900), (1, 30)]

out = []
for b, c in CASES:
    n = b + c
    row = {"b": b, "c": c}
    row["p_exact"] = 1.0 if n == 0 else float(stats.binomtest(min(b, c), n, 0.5).pvalue)
    if n:
        chi2 = max(abs(b - c) - 1, 0) ** 2 / n
        row["chi2"] = chi2
        row["p_chi2"] = float(stats.chi2.sf(chi2, 1))
    out.append(row)
print(json.dumps({"source": "scipy %s binomtest / chi2.sf" % __import__("scipy").__version__,
                  "cases": out}, indent=1))
