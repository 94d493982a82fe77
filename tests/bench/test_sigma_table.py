"""The max-σ table on the real pair: one line per threshold, nested valid sets."""

import re

from bench.sigma_table import sigma_table


def test_a_larger_max_sigma_keeps_more_of_the_real_pair():
    lines = sigma_table("untrained:tiny", [0.0, 0.1, 1e9])  # none, some, every finite pixel
    assert lines[0].startswith("raw field, every data pixel:")
    assert len(lines) == 4
    kept = [[float(x) for x in re.findall(r"valid ([\d.]+)%", line)] for line in lines[1:]]
    clear = [k[0] for k in kept]
    cloud = [k[1] for k in kept]
    assert clear == sorted(clear) and cloud == sorted(cloud)
    assert clear[0] == 0.0 and clear[-1] > 90.0
