"""Comparing camcli's JSON outputs: equal structure and text, floats to a tolerance."""


def json_differences(a, b, where="", tolerance=1e-5) -> list[str]:
    """Where two JSON values differ (an empty list when they are the same), floats compared to `tolerance`."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))}"]
        return [d for key in a for d in json_differences(a[key], b[key], f"{where}.{key}", tolerance)]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in json_differences(x, y, f"{where}[{i}]", tolerance)]
    if isinstance(a, float) or isinstance(b, float):
        return [] if abs(a - b) <= tolerance else [f"{where}: {a} != {b}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]
