"""Screenshot of a ``newsbeam report`` page, as in the README (``docs/report-demo.png``).

Opens the page in Debian's ``chromium``, headless and offline, at a fixed width, and
crops the empty page background below the content::

    newsbeam demo --output demo-output
    newsbeam report demo-output --out report.html
    .venv/bin/python tools/report_screenshot.py report.html docs/report-demo.png
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys
import tempfile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="The report page (HTML).")
    parser.add_argument("png", help="Where to write the screenshot.")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--height", type=int, default=3200,
                        help="Window height; the empty part below the page is cropped.")
    args = parser.parse_args(argv)
    binary = shutil.which("chromium")
    if binary is None:
        print("chromium is needed: apt-get install -y chromium", file=sys.stderr)
        return 2
    from PIL import Image  # installed with matplotlib

    with tempfile.TemporaryDirectory() as profile:
        shot = pathlib.Path(profile) / "shot.png"
        subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--window-size={args.width},{args.height}", f"--screenshot={shot}",
             pathlib.Path(args.page).resolve().as_uri()],
            check=True, capture_output=True, timeout=180)
        image = Image.open(shot).convert("RGB")
    background = image.getpixel((image.width - 1, image.height - 1))
    bottom = image.height
    while bottom > 1 and all(image.getpixel((x, bottom - 1)) == background
                             for x in range(0, image.width, 4)):
        bottom -= 1
    image.crop((0, 0, image.width, min(image.height, bottom + 24))).save(
        args.png, optimize=True)
    print(f"wrote {args.png} ({image.width}x{min(image.height, bottom + 24)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
