"""An HTML template that lets `dvc plots show` / `dvc plots diff` render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so without internet every chart stays
blank. This template inlines the same three libraries, bundled by the installed `vl-convert-python` package,
and leaves out DVC's `{scripts}` placeholder (the CDN tags). `.dvc/config` points `plots.html_template` at it;
`make setup` writes it (`python -m aligned_forensics.common.offline_plots`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aligned_forensics.common.io import atomic_write_text

DEFAULT_PATH = Path(".dvc/plots/offline.html")
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots (offline)</title>
    <script type="text/javascript">
{bundle}
    </script>
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
        img {{ max-width: 100%; }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_template() -> str:
    """The page, with the Vega libraries inline (they define window.vegaEmbed, which DVC's charts call)."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    # DVC fills {refresh_tag} and {plot_divs} by plain replacement: keep both, escape nothing else.
    return PAGE.replace("{{", "{").replace("}}", "}").replace("{bundle}", bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    atomic_write_text(args.out, offline_template())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
