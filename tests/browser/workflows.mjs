// SPDX-License-Identifier: Apache-2.0
// Opens every workflow file in a running ComfyUI's own frontend (Debian chromium, headless, playwright-core)
// as a user opens it from the templates dialog, and records what the frontend draws:
//   - each node type's drawn size (LGraphNode.computeSize of a fresh node: the least size the frontend
//     grows a saved node to when a workflow loads) -> <out>/node_sizes.json
//   - per workflow: every node's box after loading, the groups, the view, and a screenshot at the
//     view the file opens at -> <out>/<name>.json, <out>/<name>.png
//   - with GEN4D_RUN=1, each workflow marked runnable (extra.gen4d.runnable) is queued from the page as a
//     user queues it, and its 4D preview's viewer is read back: the run's result and time, the frames the
//     viewer loaded and the share of its first frame that is not background -> <out>/<name>.run.json,
//     <out>/<name>.run.png (the preview node, centred)
// Usage: COMFY_URL=http://127.0.0.1:8188 node tests/browser/workflows.mjs <out> <workflow.json>...
// Driven by tools/workflow_shots.py (make workflow-shots), which starts ComfyUI with the pack.
import { mkdirSync, readFileSync, rmSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.COMFY_URL || "http://127.0.0.1:8188";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WIDTH = Number(process.env.SHOT_WIDTH || 1600);
const HEIGHT = Number(process.env.SHOT_HEIGHT || 900);
const RUN = process.env.GEN4D_RUN === "1";
const RUN_TIMEOUT_MS = Number(process.env.GEN4D_RUN_TIMEOUT_S || 600) * 1000;
const [out, ...files] = process.argv.slice(2);
if (!out || !files.length) {
  console.error("usage: node workflows.mjs <out> <workflow.json>...");
  process.exit(2);
}
mkdirSync(out, { recursive: true });

const profile = mkdtempSync(join(tmpdir(), "gen4d-wf-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: WIDTH, height: HEIGHT },
  args: ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
    "--disable-default-apps", "--disable-extensions"],
});
await context.route("**/*", (route) => (route.request().url().startsWith(BASE) ? route.continue() : route.abort()));
// Dialogs still open (a modal covers the canvas): Escape, then their close buttons; throws if one stays.
async function closeDialogs(page) {
  const open = page.locator("[role=dialog]:visible, .p-dialog:visible");
  for (let attempt = 0; attempt < 5 && (await open.count()); attempt++) {
    await page.keyboard.press("Escape");
    await page.waitForTimeout(400);
    if (!(await open.count())) break;
    const close = open.first().locator("button[aria-label='Close'], .p-dialog-close-button, .p-dialog-header-close");
    if (await close.count()) await close.first().click().catch(() => {});
    await page.waitForTimeout(400);
  }
  if (await open.count()) throw new Error("a dialog stays open over the canvas; the screenshots would show it");
}

// Queue the loaded workflow as the Run button does and wait for the server's verdict; then read what each
// 4D preview's viewer drew (its WebGL buffer, first frame).
async function runAndReadPreviews(page) {
  const t0 = Date.now();
  await page.evaluate(async () => {
    window.__gen4dRun = null;
    if (!window.__gen4dListening) {
      window.__gen4dListening = true;
      window.app.api.addEventListener("execution_success", () => { window.__gen4dRun = { ok: true }; });
      window.app.api.addEventListener("execution_error", (e) => {
        const d = e.detail ?? {};
        window.__gen4dRun = { ok: false, error: `${d.node_type ?? "?"}: ${d.exception_message ?? "error"}` };
      });
    }
    await window.app.queuePrompt(0, 1);
  });
  const finished = await page.waitForFunction(() => window.__gen4dRun, null, { timeout: RUN_TIMEOUT_MS, polling: 500 })
    .then(() => true, () => false);
  if (!finished) {
    await page.evaluate(() => window.app.api.interrupt?.()).catch(() => {});
    return { ok: false, error: `no result within ${RUN_TIMEOUT_MS / 1000} s (GEN4D_RUN_TIMEOUT_S)`,
      seconds: (Date.now() - t0) / 1000 };
  }
  const run = await page.evaluate(() => window.__gen4dRun);
  run.seconds = (Date.now() - t0) / 1000;
  if (!run.ok) return run;
  await page.waitForFunction(() => window.app.graph._nodes.filter((n) => n.type === "Gen4D_Preview4D")
    .every((n) => n.gen4dViewer?.numFrames > 0), null, { timeout: 60000, polling: 250 }).catch(() => {});
  run.previews = await page.evaluate(async () => {
    const out = [];
    for (const node of window.app.graph._nodes.filter((n) => n.type === "Gen4D_Preview4D")) {
      const viewer = node.gen4dViewer;
      if (!viewer || !(viewer.numFrames > 0)) { out.push({ id: node.id, frames: 0, drawn: 0 }); continue; }
      viewer.pause();
      viewer.setFrame(0);
      await viewer.ready();
      const gl = viewer.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
      const px = new Uint8Array(w * h * 4);
      gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
      const bg = viewer.background.map((v) => Math.round(v * 255));
      let drawn = 0;
      for (let i = 0; i < px.length; i += 4) {
        if (Math.abs(px[i] - bg[0]) + Math.abs(px[i + 1] - bg[1]) + Math.abs(px[i + 2] - bg[2]) > 24) drawn++;
      }
      out.push({ id: node.id, frames: viewer.numFrames, drawn: drawn / (w * h), size: [w, h] });
    }
    return out;
  });
  // what a run leaves on nodes (notes, images) must not grow a node over the one below it; live previews
  // shown while a node runs are gone a moment later
  await page.waitForTimeout(3000);
  run.overlaps = await page.evaluate(() => {
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    const boxes = window.app.graph._nodes.filter((n) => !["MarkdownNote", "Note"].includes(n.type))
      .map((n) => ({ id: n.id, type: n.type, size: [n.size[0], n.size[1]],
        box: [n.pos[0], n.pos[1] - title, n.pos[0] + n.size[0], n.pos[1] + n.size[1]] }));
    const hits = [];
    for (let i = 0; i < boxes.length; i++) {
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i].box, b = boxes[j].box;
        if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3]) hits.push([boxes[i], boxes[j]]);
      }
    }
    return hits;
  });
  return run;
}

let failed = 0;
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e.stack || e).split("\n").slice(0, 4).join(" | ")));
  await page.goto(BASE);
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph, null, { timeout: 120000 });
  await page.waitForTimeout(3000);
  // a first start opens dialogs (templates browser, release notes); frontends from 1.3x open the templates
  // browser for a new user, and it would cover every screenshot
  await page.evaluate(async () => {
    try { await window.app.extensionManager?.setting?.set("Comfy.TutorialCompleted", true); } catch (e) { /* older */ }
  });
  await closeDialogs(page);
  // the minimap would cover the bottom right of every screenshot
  await page.evaluate(async () => {
    try { await window.app.extensionManager?.setting?.set("Comfy.Minimap.Visible", false); } catch (e) { /* older */ }
    window.app.canvas.show_info = false;
  });

  const used = files.flatMap((f) => JSON.parse(readFileSync(f, "utf8")).nodes.map((n) => n.type));
  const sizes = await page.evaluate((used) => {
    const pack = Object.keys(window.LiteGraph.registered_node_types).filter((t) => t.startsWith("Gen4D_"));
    const types = [...new Set([...pack, ...used])].sort();
    const result = {};
    for (const type of types) {
      const node = window.LiteGraph.createNode(type);
      if (!node) { result[type] = null; continue; }
      window.app.graph.add(node);
      const s = node.computeSize();
      result[type] = { computed: [Math.ceil(s[0]), Math.ceil(s[1])], created: [Math.ceil(node.size[0]), Math.ceil(node.size[1])] };
      window.app.graph.remove(node);
    }
    return result;
  }, used);
  sizes._meta = await page.evaluate(() => ({
    frontend: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
    title_height: window.LiteGraph.NODE_TITLE_HEIGHT,
  }));
  writeFileSync(join(out, "node_sizes.json"), JSON.stringify(sizes, null, 1));

  for (const file of files) {
    const name = basename(file, ".json");
    const data = JSON.parse(readFileSync(file, "utf8"));
    await page.evaluate(async ([wf, name]) => { await window.app.loadGraphData(wf, true, true, name); }, [data, name]);
    await page.waitForTimeout(2500);
    const drawn = await page.evaluate(() => {
      const g = window.app.graph;
      const c = window.app.canvas;
      return {
        nodes: g._nodes.map((n) => ({ id: n.id, type: n.type, pos: [n.pos[0], n.pos[1]], size: [n.size[0], n.size[1]],
          computed: Array.from(n.computeSize()) })),
        groups: g._groups.map((gr) => ({ title: gr.title, bounding: Array.from(gr._bounding ?? gr.bounding) })),
        view: { scale: c.ds.scale, offset: Array.from(c.ds.offset), width: c.canvas.width, height: c.canvas.height,
          visible: Array.from(c.visible_area ?? []) },
      };
    });
    drawn.saved = Object.fromEntries(data.nodes.map((n) => [n.id, { pos: n.pos, size: n.size }]));
    const grown = drawn.nodes.filter((n) => {
      const s = drawn.saved[n.id]?.size;
      return s && (n.size[0] > s[0] + 0.5 || n.size[1] > s[1] + 0.5);
    });
    drawn.grown = grown.map((n) => ({ id: n.id, type: n.type, saved: drawn.saved[n.id].size, drawn: n.size }));
    writeFileSync(join(out, `${name}.json`), JSON.stringify(drawn, null, 1));
    await closeDialogs(page);
    await page.screenshot({ path: join(out, `${name}.png`) });
    // the whole graph, fitted to the window (the thumbnail for the templates dialog)
    await page.evaluate(() => {
      const c = window.app.canvas;
      c.deselectAll?.();
      if (typeof c.fitViewToSelectionAnimated === "function") c.fitViewToSelectionAnimated({ duration: 1 });
      else c.ds.fitToBounds?.(window.app.graph.getBoundingBox?.() ?? [0, 0, 3000, 1500]);
      c.setDirty(true, true);
    });
    await page.waitForTimeout(1500);
    // where the graph lies on the page (for cropping the thumbnail)
    const fit = await page.evaluate(() => {
      const c = window.app.canvas;
      const rect = c.canvas.getBoundingClientRect();
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const g of window.app.graph._groups) {
        const [x, y, w, h] = Array.from(g._bounding ?? g.bounding);
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
      }
      const toPage = (x, y) => [rect.left + (x + c.ds.offset[0]) * c.ds.scale, rect.top + (y + c.ds.offset[1]) * c.ds.scale];
      return [...toPage(x0, y0), ...toPage(x1, y1)];
    });
    writeFileSync(join(out, `${name}.all.json`), JSON.stringify({ graph_box_px: fit }));
    await page.screenshot({ path: join(out, `${name}.all.png`) });
    console.log(`${grown.length ? "GROWN" : "ok   "} ${name}: ${drawn.nodes.length} nodes` +
      (grown.length ? ` — drawn larger than saved: ${JSON.stringify(drawn.grown)}` : ""));
    if (grown.length) failed++;
    if (RUN && data.extra?.gen4d?.runnable) {
      const run = await runAndReadPreviews(page);
      writeFileSync(join(out, `${name}.run.json`), JSON.stringify(run, null, 1));
      const previews = run.previews ?? [];
      const good = run.ok && previews.length > 0 && previews.every((v) => v.frames > 0 && v.drawn > 0.01) &&
        !run.overlaps?.length;
      await page.evaluate(() => {
        const node = window.app.graph._nodes.find((n) => n.type === "Gen4D_Preview4D");
        const c = window.app.canvas;
        if (node) { c.ds.scale = 1; c.ds.offset = [-node.pos[0] + 300, -node.pos[1] + 150]; c.setDirty(true, true); }
      });
      await page.waitForTimeout(1500);
      await page.screenshot({ path: join(out, `${name}.run.png`) });
      console.log(`${good ? "ran  " : "FAILED"} ${name}: ${run.ok ? "success" : run.error} in ${run.seconds.toFixed(1)} s` +
        previews.map((v) => `; preview ${v.id}: ${v.frames} frames, ${(100 * v.drawn).toFixed(1)} % drawn`).join("") +
        (run.overlaps?.length ? `; after the run these nodes overlap: ${JSON.stringify(run.overlaps.map(
          ([a, b]) => [`${a.type} #${a.id} ${a.size.map(Math.round)}`, `${b.type} #${b.id}`]))}` : ""));
      if (!good) failed++;
    }
  }
  if (errors.length) console.log(`page errors: ${errors.join("; ")}`);
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
