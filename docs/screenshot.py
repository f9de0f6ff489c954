"""Screenshot a camcli report page in headless Chromium (the README's picture of `make demo`'s report).

    python docs/screenshot.py demo_out/index.html docs/report.png [--width 1280] [--height 860]

Uses Debian's chromium (`make browser`) through Playwright, as the browser tests do; Playwright's
own browser download is neither needed nor possible offline. Waits until every thumbnail has loaded.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", type=Path, help="the report's index.html")
    parser.add_argument("picture", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=860)
    args = parser.parse_args(argv)
    chromium = os.environ.get("CAMCLI_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not args.page.is_file():
        print(f"screenshot: {args.page} does not exist: run `make demo` first", file=sys.stderr)
        return 2
    if not os.access(chromium, os.X_OK):
        print(f"screenshot: chromium not found ({chromium}): run `make browser`", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(args.page.resolve().as_uri(), wait_until="load")
        page.evaluate("""async () => { for (const img of document.images) { img.scrollIntoView();
                         await new Promise(r => img.complete ? r() : (img.onload = img.onerror = r)); }
                         window.scrollTo(0, 0); }""")
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.picture), full_page=False)
        browser.close()
    print(args.picture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
