// SPDX-License-Identifier: Apache-2.0
// Headless browser test of web/gen4d_viewer.js: Debian chromium (SwiftShader software GL) driven by
// playwright-core, a localhost-only python http.server, no network. Run by `make test-browser`.
// Writes screenshots and a JSON report to $GEN4D_BROWSER_OUT (default tests/browser/out).
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const OUT = process.env.GEN4D_BROWSER_OUT || join(HERE, "out");
const PYTHON = process.env.PYTHON || join(ROOT, ".venv/bin/python");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
mkdirSync(OUT, { recursive: true });

const report = {};
const LIMIT_S = Number(process.env.GEN4D_BROWSER_TIMEOUT || 300);
let cleanup = () => {};
const watchdog = setTimeout(async () => {
  console.log(`FAIL browser test exceeded ${LIMIT_S} s`);
  await cleanup();
  process.exit(2);
}, LIMIT_S * 1000);
watchdog.unref();
let failures = 0;
function check(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures++;
}

function startServer() {
  return new Promise((res, rej) => {
    const proc = spawn(PYTHON, ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", ROOT],
      { stdio: ["ignore", "pipe", "pipe"] });
    let buf = "";
    const onData = (d) => {
      buf += d.toString();
      const m = /port (\d+)/.exec(buf);
      if (m) res({ proc, port: Number(m[1]) });
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", () => {});
    proc.on("exit", (code) => rej(new Error(`http.server exited (${code})`)));
    setTimeout(() => rej(new Error("http.server did not start")), 15000);
  });
}

const { proc: server, port } = await startServer();
const base = `http://127.0.0.1:${port}`;
const profile = mkdtempSync(join(tmpdir(), "gen4d-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 640, height: 480 },
  args: ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-default-apps", "--disable-extensions"],
});
cleanup = async () => {
  server.kill();
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
};
// No network beyond the local server.
await context.route("**/*", (route) => (route.request().url().startsWith(base) ? route.continue() : route.abort()));

try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${base}/tests/browser/viewer_test.html`);
  await page.waitForFunction(() => window.pageReady === true);
  const root = page.locator(".gen4d-viewer");
  const canvas = page.locator(".gen4d-canvas");

  // ---- moving asset: two times differ where the ball moves, neither is blank
  const ok = await page.evaluate(() => window.viewer.load("/tests/browser/fixtures/moving.g4d"));
  check(ok === true, "moving.g4d loads");
  report.numFrames = await page.evaluate(() => window.viewer.numFrames);
  await page.evaluate(async () => { viewer.pause(); viewer.setFrame(0); await viewer.ready(); });
  await canvas.screenshot({ path: join(OUT, "frame_first.png") });
  const last = report.numFrames - 1;
  const s = await page.evaluate(async (last) => {
    const a = grab();
    viewer.setFrame(last);
    await viewer.ready();
    const b = grab();
    return { first: stats(a), last: stats(b), between: stats(a, b) };
  }, last);
  await canvas.screenshot({ path: join(OUT, "frame_last.png") });
  report.screens = s;
  check(s.first.nonBg > 0.05 && s.last.nonBg > 0.05, `not blank (non-background ${s.first.nonBg.toFixed(3)}, ${s.last.nonBg.toFixed(3)})`);
  check(s.between.diffLeft > 0.005 && s.between.diffRight > 0.005,
    `frames 0 and ${last} differ on both sides where the ball moves (left ${s.between.diffLeft.toFixed(3)}, right ${s.between.diffRight.toFixed(3)})`);

  // ---- scrubbing with the mouse updates the frame index and label
  await page.evaluate(async () => { viewer.setFrame(0); await viewer.ready(); });
  const box = await page.locator(".gen4d-scrub").boundingBox();
  await page.mouse.click(box.x + box.width * 0.55, box.y + box.height / 2);
  const scrubbed = await root.getAttribute("data-frame");
  const label = await page.locator(".gen4d-frame").textContent();
  report.scrub = { frame: Number(scrubbed), label };
  check(Number(scrubbed) > 0 && Number(scrubbed) < report.numFrames, `scrubbing moved to frame ${scrubbed} (label "${label}")`);

  // ---- orbit by mouse drag changes the image; reset restores it
  await page.evaluate(async () => { viewer.setFrame(0); await viewer.ready(); window._a = grab(); });
  const cb = await canvas.boundingBox();
  await page.mouse.move(cb.x + cb.width / 2, cb.y + cb.height / 2);
  await page.mouse.down();
  await page.mouse.move(cb.x + cb.width / 2 + 80, cb.y + cb.height / 2 + 20, { steps: 5 });
  await page.mouse.up();
  const orbit = await page.evaluate(async () => {
    await viewer.ready();
    const moved = stats(window._a, grab()).diff;
    document.querySelector(".gen4d-reset").click();
    await viewer.ready();
    return { moved, afterReset: stats(window._a, grab()).diff };
  });
  report.orbit = orbit;
  check(orbit.moved > 0.02 && orbit.afterReset < 0.002, `orbit changes the view (${orbit.moved.toFixed(3)}), reset restores it (${orbit.afterReset.toFixed(4)})`);

  // ---- background colour input
  const bgOk = await page.evaluate(async () => {
    const input = document.querySelector(".gen4d-bg");
    input.value = "#00ff00";
    input.dispatchEvent(new Event("input"));
    await viewer.ready();
    const { px } = grab();
    return px[0] === 0 && px[1] === 255 && px[2] === 0;
  });
  check(bgOk, "background colour input repaints the background");

  // ---- fps on the small asset (software renderer), orbiting every frame (a sort per frame)
  report.fpsSmall = await page.evaluate(() => viewer.benchmark(3000));
  console.log(`fps (2k splats, 480x~370 px, SwiftShader): ${report.fpsSmall.fps.toFixed(1)}`);

  // ---- 200k splats x 24 frames: load, play, orbit without freezing the page
  const big = await page.evaluate(async () => {
    let maxGap = 0, last = performance.now(), running = true;
    const tick = (t) => { maxGap = Math.max(maxGap, t - last); last = t; if (running) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    const t0 = performance.now();
    const ok = await viewer.load("/tests/browser/fixtures/big.g4d");
    const loadMs = performance.now() - t0;
    await viewer.ready();
    const firstDrawMs = performance.now() - t0;
    const play0 = viewer.frame;
    await new Promise((r) => setTimeout(r, 2000));
    const played = viewer.frame !== play0 || viewer.stats.draws > 0;
    viewer.pause();
    const bench = await viewer.benchmark(4000);
    running = false;
    return { ok, stride: viewer.stats.stride, drawn: viewer.drawCount, splats: viewer.asset.numSplats, frames: viewer.numFrames, loadMs, firstDrawMs, played, maxGapMs: maxGap, bench };
  });
  report.big = big;
  await canvas.screenshot({ path: join(OUT, "big_200k.png") });
  check(big.ok && big.splats === 200000 && big.frames === 24, "200k x 24 asset loads");
  console.log(`200k x 24: load ${big.loadMs.toFixed(0)} ms, first sorted draw ${big.firstDrawMs.toFixed(0)} ms, ` +
    `longest gap between animation frames ${big.maxGapMs.toFixed(0)} ms, fps ${big.bench.fps.toFixed(1)} (${big.bench.sorts} sorts, level of detail: every ${big.stride}th splat, ${big.drawn} drawn)`);
  check(big.maxGapMs < 2000, "page never froze for 2 s or more");

  // ---- bad input: messages in the widget
  for (const [file, want] of [["corrupt.g4d", /bad magic/], ["truncated.g4d", /truncated/], ["missing.g4d", /HTTP 404/]]) {
    await page.evaluate((f) => viewer.load(`/tests/browser/fixtures/${f}`), file);
    const msg = await root.getAttribute("data-message");
    const visible = await page.locator(".gen4d-message").isVisible();
    check(want.test(msg) && visible, `${file}: message "${msg}"`);
  }
  await canvas.screenshot({ path: join(OUT, "corrupt_message.png") });
  await page.locator(".gen4d-viewer").screenshot({ path: join(OUT, "widget_message.png") });
  check(errors.length === 0, `no page errors ${errors.join("; ")}`);
  report.pageErrors = errors;
} finally {
  await cleanup();
}
writeFileSync(join(OUT, "report.json"), JSON.stringify(report, null, 2));
console.log(`report and screenshots in ${OUT}`);
process.exit(failures ? 1 : 0);
