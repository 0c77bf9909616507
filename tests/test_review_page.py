"""Issue 9, item 5: the review page (`medvl review BUILD --serve`) on a small real build.

The HTTP side is tested with raw requests (paths confined to the build, filters and paging in SQL, the
index built once, grades appended safely under concurrent graders, mask overlays); the page itself in a real
headless browser: Debian's `chromium` driven by playwright (never `playwright install`). The browser test is
skipped only when no chromium binary exists."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_review import small_build

from medvl.review.judge import CRITERIA, Criterion, Judged, ReviewConfig, Verdict
from medvl.review.report import make_report, write_report
from medvl.review.server import confined, make_server
from medvl.review.store import BuildIndex
from medvl.review.sampling import iter_samples

EXTRA_REJECT = {"source": "retina_seg", "item": "images/retina_y9999_x9999.png", "stage": "dedup",
                "reason": "images/retina_y9999_x9999.png: duplicate of images/retina_y0000_x0000.png"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return small_build(tmp_path_factory.mktemp("page"))


@pytest.fixture
def build(built, tmp_path) -> Path:
    out = tmp_path / "build"
    shutil.copytree(built, out)
    with open(out / "rejects.jsonl", "a", encoding="utf-8") as f:  # a second stage to filter by
        f.write(json.dumps(EXTRA_REJECT, sort_keys=True) + "\n")
    return out


@pytest.fixture
def server(build):
    httpd = make_server(build, "127.0.0.1", 0)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def get(httpd, path: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    """A raw request: the path is sent exactly as given (no client-side normalization of '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def samples(build: Path) -> list[dict]:
    return [json.loads(x) for x in (build / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_paths_are_confined_to_the_build(build, server, tmp_path):
    image = samples(build)[0]["images"][0]
    status, body = get(server, f"/file/{image}")
    assert status == 200 and body.startswith(b"\x89PNG")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    (build / "images" / "link.png").symlink_to(secret)  # a symlink inside images/ pointing out of the build
    (build / "images" / "recipe.png").symlink_to(build / "recipe.yaml")  # ... or out of images/
    mask = next(r["mask"] for r in map(json.loads, (build / "records.jsonl").read_text().splitlines()) if r["mask"])
    for path in ["/file/../recipe.yaml", "/file/images/../recipe.yaml", "/file/images/../../secret.txt",
                 "/file/images/%2e%2e/recipe.yaml", "/file/images%2f..%2frecipe.yaml", "/file//etc/passwd",
                 f"/file/{secret}", "/file/recipe.yaml", "/file/summary.json", "/file/images/link.png",
                 "/file/images/recipe.png", "/file/images/./x.png", "/file/images\\..\\recipe.yaml",
                 "/static/../server.py", "/static/judge_prompt.yaml", "/api/overlay?mask=../recipe.yaml",
                 f"/api/overlay?mask={image}", "/api/overlay?mask=masks/../../secret.txt", "/../recipe.yaml"]:
        status, body = get(server, path)
        assert status == 404, (path, body[:80])
        assert b"not for the page" not in body and b"salt" not in body
    assert get(server, f"/file/{mask}")[0] == 200
    assert confined(build, image) == (build / image).resolve()
    assert confined(build, "images/../recipe.yaml") is None and confined(build, "/etc/passwd") is None


def test_mask_overlay_colours_exactly_the_mask(build, server):
    rec = next(r for r in map(json.loads, (build / "records.jsonl").read_text().splitlines()) if r["mask"])
    status, body = get(server, f"/api/overlay?mask={rec['mask']}")
    assert status == 200
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    mask = np.asarray(Image.open(build / rec["mask"]))
    assert rgba.shape == mask.shape + (4,)
    assert ((rgba[..., 3] > 0) == (mask > 0)).all() and (mask > 0).any()


def test_filters_and_paging_run_on_the_server(build, server):
    rows = samples(build)
    want = [s["id"] for s in rows if s["meta"]["dataset"] == "retina_seg" and s["lang"] == "en"]
    got, offset = [], 0
    while True:
        status, body = get(server, f"/api/samples?dataset=retina_seg&lang=en&offset={offset}&limit=40")
        page = json.loads(body)
        assert status == 200 and page["total"] == len(want) and len(page["items"]) <= 40
        if not page["items"]:
            break
        got += [s["id"] for s in page["items"]]
        offset += 40
    assert got == want  # build order, every matching sample once
    facets = json.loads(get(server, "/api/facets")[1])
    assert facets["kind"] == dict(sorted(Counter(s["kind"] for s in rows).items()))
    assert facets["reject_stage"] == {"dedup": 1, "read": 1}
    rejects = json.loads(get(server, "/api/rejects?stage=dedup")[1])
    assert rejects["total"] == 1 and rejects["items"][0]["item"] == EXTRA_REJECT["item"]
    assert json.loads(get(server, "/api/samples?limit=100000")[1])["limit"] == 200  # pages are bounded
    n = json.loads(get(server, "/api/samples?kind=region_caption&limit=1")[1])["items"][0]["n"]
    detail = json.loads(get(server, f"/api/sample?n={n}")[1])
    assert detail["boxes"] and all(0 <= v <= 1 for b in detail["boxes"] for v in b["box"])
    assert detail["record"]["id"] == detail["sample"]["record_id"]
    assert get(server, "/api/sample?n=999999")[0] == 404


def test_index_is_built_once_and_rebuilt_when_the_build_changes(build):
    a = BuildIndex(build)
    stamp = a.path.stat().st_mtime_ns
    b = BuildIndex(build)
    assert b.path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    total = b.samples({})[0]
    with open(build / "samples.jsonl", "a", encoding="utf-8") as f:
        extra = samples(build)[0] | {"id": "extra#sample"}
        f.write(json.dumps(extra) + "\n")
    c = BuildIndex(build)
    assert c.samples({})[0] == total + 1 and c.has_sample("extra#sample")


def test_grades_are_validated_and_safe_under_concurrent_graders(build, server):
    ids = [s["id"] for s in samples(build)[:8]]
    assert get(server, "/api/grade", "POST", {"sample_id": ids[0], "grade": 7})[0] == 400
    assert get(server, "/api/grade", "POST", {"sample_id": ids[0], "grade": "2"})[0] == 400
    assert get(server, "/api/grade", "POST", {"sample_id": "no#such#sample", "grade": 2})[0] == 400
    assert not (build / "review" / "grades.jsonl").exists()

    def grader(sid: str) -> None:
        for k in range(25):
            status, _ = get(server, "/api/grade", "POST", {"sample_id": sid, "grade": k % 5 + 1, "comment": "x" * 500})
            assert status == 200

    threads = [threading.Thread(target=grader, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (build / "review" / "grades.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 * 25 and all(json.loads(x)["comment"] == "x" * 500 for x in lines)  # none interleaved
    latest = server.app.grades.latest()
    assert {sid: latest[sid]["grade"] for sid in ids} == {sid: 5 for sid in ids}  # last grade wins (24 % 5 + 1)
    page = json.loads(get(server, "/api/samples?limit=8")[1])
    assert [s["grade"] for s in page["items"]] == [5] * 8


def write_judge_report(build: Path, sample_ids: list[str]) -> None:
    """A report as `medvl review --judge` writes it, with verdicts for ``sample_ids``."""
    by_id = {s.id: s for s in iter_samples(build / "samples.jsonl")}
    cfg = ReviewConfig(judge="openai:m@http://127.0.0.1:9/v1", samples=len(sample_ids))
    judged: dict[str, list[Judged]] = {}
    for i, sid in enumerate(sample_ids):
        v = Verdict(**{c: Criterion(score=i % 5 + 1, comment=f"{c} note {i}") for c in CRITERIA},
                    overall_comment=f"overall note {i}")
        s = by_id[sid]
        judged.setdefault(s.meta["dataset"], []).append(Judged(s, v))
    write_report(build, make_report(build, cfg, judged, {"prompt_version": "t"}))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_page_in_a_headless_browser(build, server):
    from playwright.sync_api import expect, sync_playwright

    rows = samples(build)
    judged_ids = [s["id"] for s in rows if s["meta"]["dataset"] == "ihc_tiles"][:3]
    write_judge_report(build, judged_ids)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    grades = build / "review" / "grades.jsonl"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.set_default_timeout(60_000)  # the machine may be busy: waits are generous, never timed
            expect.set_options(timeout=60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=30000)
            expect(page.locator("#page-info")).to_have_text(f"1–50 of {len(rows)}")

            # filters change the list (server side): boxed COCO region captions only
            page.select_option("select[name=dataset]", "ihc_coco")
            page.select_option("select[name=kind]", "region_caption")
            want = [s for s in rows if s["meta"]["dataset"] == "ihc_coco" and s["kind"] == "region_caption"]
            expect(page.locator("#page-info")).to_have_text(f"1–{len(want)} of {len(want)}")
            expect(page.locator("#sample-list li")).to_have_count(len(want))
            assert page.locator("#sample-list li").evaluate_all("els => els.map(e => e.dataset.id)") == \
                [s["id"] for s in want]
            expect(page.locator("#sample-id")).to_have_text(want[0]["id"])

            # the image is drawn, with the record's regions and the text's box at the right place
            page.wait_for_function("() => { const i = document.querySelector('#figures img.base');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            rec = next(json.loads(x) for x in (build / "records.jsonl").read_text().splitlines()
                       if json.loads(x)["id"] == want[0]["record_id"])
            expect(page.locator("svg rect.region")).to_have_count(len(rec["regions"]))
            expect(page.locator("svg rect.textbox")).to_have_count(1)
            img = page.locator("#figures img.base").bounding_box()
            box = page.locator("svg rect.textbox").bounding_box()
            from medvl.review.server import text_boxes

            x1, y1, x2, y2 = text_boxes(want[0])[0]["box"]
            assert abs(box["x"] - (img["x"] + x1 * img["width"])) < 3
            assert abs(box["y"] - (img["y"] + y1 * img["height"])) < 3
            assert abs(box["width"] - (x2 - x1) * img["width"]) < 4 and box["width"] > 5

            # "2" saves a grade for the shown sample; j moves on; c + text + Enter saves a comment
            page.keyboard.press("2")
            expect(page.locator("#hand-grade")).to_have_text(" saved: 2")
            row = json.loads(grades.read_text().splitlines()[-1])
            assert row["sample_id"] == want[0]["id"] and row["grade"] == 2
            expect(page.locator("#sample-list li.current .badge.hand")).to_have_text("2")
            page.keyboard.press("j")
            expect(page.locator("#sample-id")).to_have_text(want[1]["id"])
            page.keyboard.press("ArrowLeft")
            expect(page.locator("#sample-id")).to_have_text(want[0]["id"])
            expect(page.locator("#hand-grade")).to_have_text(" saved: 2")  # the saved grade comes back
            page.keyboard.press("j")
            expect(page.locator("#sample-id")).to_have_text(want[1]["id"])
            page.keyboard.press("4")
            expect(page.locator("#hand-grade")).to_have_text(" saved: 4")
            page.keyboard.press("c")
            page.keyboard.type("box misses the stain")
            page.keyboard.press("Enter")
            expect(page.locator("#save-status")).to_have_text(" saved")
            rows_saved = [json.loads(x) for x in grades.read_text().splitlines()]
            assert rows_saved[-1] == rows_saved[-1] | {"sample_id": want[1]["id"], "grade": 4,
                                                       "comment": "box misses the stain"}
            assert len(rows_saved) == 3

            # the mask of a segmentation record is overlaid
            page.select_option("select[name=kind]", "*")
            page.select_option("select[name=dataset]", "retina_seg")
            page.wait_for_function("() => { const m = document.querySelector('#figures img.mask');"
                                   " return m && m.complete && m.naturalWidth > 0; }")

            # the judge's scores beside the hand grade ("judged only" lists exactly the judged samples)
            page.select_option("select[name=dataset]", "*")
            page.check("input[name=judged]")
            expect(page.locator("#sample-list li")).to_have_count(3)
            assert sorted(page.locator("#sample-list li").evaluate_all("els => els.map(e => e.dataset.id)")) == \
                sorted(judged_ids)
            page.keyboard.press("j")  # the keys still work after a filter was clicked
            listed = page.locator("#sample-list li").evaluate_all("els => els.map(e => e.dataset.id)")
            expect(page.locator("#sample-id")).to_have_text(listed[1])
            i = judged_ids.index(listed[1])
            expect(page.locator("#judge-table")).to_contain_text(f"medical_accuracy note {i}")
            expect(page.locator("#judge-table caption")).to_have_text(f"judge: overall {i % 5 + 1:.2f} (1 best)")

            # rejects are listed and filtered by stage
            page.click("#tab-rejects")
            expect(page.locator("#samples-view")).to_be_hidden()
            expect(page.locator("#reject-table")).to_be_visible()
            expect(page.locator("#reject-table tr.reject")).to_have_count(2)
            page.select_option("#reject-stage", "read")
            expect(page.locator("#reject-table tr.reject")).to_have_count(1)
            expect(page.locator("#reject-table tr.reject")).to_contain_text("README.txt")
            page.select_option("#reject-stage", "dedup")
            expect(page.locator("#reject-table tr.reject")).to_contain_text(EXTRA_REJECT["item"])
            page.keyboard.press("2")  # grading keys do nothing on the rejects view
            page.click("#tab-samples")
            expect(page.locator("#figures img.base")).to_be_visible()
            assert len(grades.read_text().splitlines()) == 3
            assert not errors, errors
        finally:
            browser.close()
    assert os.path.getsize(grades) > 0
