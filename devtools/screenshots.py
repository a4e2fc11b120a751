"""Screenshots of the timeline page at phone and desktop widths, for docs/design.md:
``python -m devtools.screenshots`` (needs Debian's chromium). A throwaway trail of the
bundled samples plus a few events, served by ``psaudit serve``, read by Playwright."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from devtools.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
BANK = "8e5f1a2b-6c7d-ef11-bfe3-6045bd0c1a22"


def main() -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_web_page import BROWSER_ARGS, CHROMIUM, seed

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "audit.sqlite3"
        seed(db)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "--db", str(db), "serve", "--port", str(port)],
            cwd=ROOT,
        )
        try:
            url = f"http://127.0.0.1:{port}/api/bankaccounts/{BANK}/timeline?limit=4"
            for _ in range(100):
                try:
                    urllib.request.urlopen(url, timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
                for name, width, height in (("phone", 390, 844), ("desktop", 1280, 900)):
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(url)
                    target = ROOT / "docs" / f"timeline-{name}.png"
                    page.screenshot(path=str(target))
                    print(f"wrote {target.relative_to(ROOT)}")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
