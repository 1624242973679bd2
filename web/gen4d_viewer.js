// SPDX-License-Identifier: Apache-2.0
// Gen4D 4D Gaussian-splat viewer: a small, dependency-free WebGL2 renderer for the ".g4d" preview
// asset written by core/preview_asset.py (see that file for the byte layout).
//
// Public API (ES module):
//   parseAsset(arrayBuffer) -> asset          validate + view the blocks; throws Error with a clear text
//   createViewer(container, options) -> Gen4DViewer
//   Gen4DViewer: load(url), setAsset(arrayBuffer), setFrame(i), play(), pause(), resetView(),
//                setBackground("#rrggbb"), setFps(f), showMessage(text), ready(), benchmark(ms), dispose()
//                state: viewer.frame, viewer.numFrames, viewer.playing, viewer.stats
//
// Rendering: instanced quads (one per splat). The vertex shader projects each splat's 3D covariance
// to a 2D screen covariance (EWA splatting with a 0.3 px^2 low-pass), places the quad along the
// ellipse axes at 3 sigma, and the fragment shader writes premultiplied colour; splats are blended
// back to front (ONE, ONE_MINUS_SRC_ALPHA) after a depth sort. The sort is a 16-bit counting sort of
// quantised camera depth, run in a Web Worker (created from a Blob, so no extra file or download) on
// every view or frame change; the previous order is drawn until the new one arrives, so 200k splats
// never block the page. Camera: OpenCV axes (x right, y down, z forward), world up is -y; the initial
// view looks along +z at the centre of the bounds from a distance that frames them.
// Positions live in an RGB16UI texture per frame (uploaded straight from the asset's uint16 block);
// covariances (from canonical scales + rotations) in two float textures, colour+opacity in RGBA8.

const MAGIC = "G4DP";
const FORMAT = "gen4d-preview";
const VERSION = 1;
const TEX_W = 2048;
const FOV_Y = (50 * Math.PI) / 180;
const BLOCKS = {
  positions: { dtype: "uint16", width: 3, perFrame: true, ctor: Uint16Array },
  color: { dtype: "uint8", width: 4, perFrame: false, ctor: Uint8Array },
  scales: { dtype: "float16", width: 3, perFrame: false, ctor: Uint16Array },
  rotations: { dtype: "int8", width: 4, perFrame: false, ctor: Int8Array },
};

/** Parse a .g4d ArrayBuffer; throws Error("...") naming what is wrong (bad magic, truncated, ...). */
export function parseAsset(buffer) {
  if (!(buffer instanceof ArrayBuffer)) throw new Error("preview asset: expected binary data");
  if (buffer.byteLength < 8) throw new Error(`preview asset is truncated (${buffer.byteLength} bytes)`);
  const head = new Uint8Array(buffer, 0, 4);
  const magic = String.fromCharCode(...head);
  if (magic !== MAGIC) throw new Error(`not a Gen4D preview asset (bad magic ${JSON.stringify(magic)})`);
  const headLen = new DataView(buffer).getUint32(4, true);
  if (8 + headLen > buffer.byteLength) throw new Error("preview asset is truncated (header cut short)");
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headLen)));
  } catch (err) {
    throw new Error(`preview asset header is corrupt (${err.message})`);
  }
  if (!header || header.format !== FORMAT) throw new Error("preview asset header has the wrong format");
  if (header.version !== VERSION) throw new Error(`unsupported preview asset version ${header.version}`);
  const T = header.num_frames | 0;
  const N = header.num_splats | 0;
  if (T < 1 || N < 0 || !Array.isArray(header.layout)) throw new Error("preview asset header has bad counts");
  const asset = { header, numFrames: T, numSplats: N, fps: Number(header.fps) || 24 };
  const b = header.bounds;
  if (!Array.isArray(b) || b.length !== 2) throw new Error("preview asset header has no bounds");
  asset.lo = b[0].map(Number);
  asset.span = b[1].map((v, k) => Number(v) - asset.lo[k]);
  asset.view = parseView(header.view);
  asset.background = typeof header.background === "string" && /^#[0-9a-f]{6}$/i.test(header.background)
    ? header.background : null;
  for (const [name, spec] of Object.entries(BLOCKS)) {
    const entry = header.layout.find((e) => e && e.name === name);
    if (!entry) throw new Error(`preview asset has no '${name}' block`);
    const count = (spec.perFrame ? T : 1) * N * spec.width;
    const bytes = count * spec.ctor.BYTES_PER_ELEMENT;
    const off = entry.offset;
    if (entry.dtype !== spec.dtype || entry.nbytes !== bytes) throw new Error(`preview asset block '${name}' is inconsistent`);
    if (!Number.isInteger(off) || off < 8 + headLen || off % spec.ctor.BYTES_PER_ELEMENT) {
      throw new Error(`preview asset block '${name}' has a bad offset`);
    }
    if (off + bytes > buffer.byteLength) throw new Error(`preview asset is truncated (block '${name}' cut short)`);
    asset[name] = new spec.ctor(buffer, off, count);
  }
  return asset;
}

let HALF_TABLE = null;
function halfToFloat(h) {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) {
      const s = i & 0x8000 ? -1 : 1;
      const e = (i >> 10) & 0x1f;
      const m = i & 0x3ff;
      HALF_TABLE[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return HALF_TABLE[h];
}

/** Covariance textures (c00 c01 c02 c11 | c12 c22) from float16 scales and int8 wxyz quaternions. */
function buildCovariances(asset, rows) {
  const N = asset.numSplats;
  const A = new Float32Array(TEX_W * rows * 4);
  const B = new Float32Array(TEX_W * rows * 2);
  const sc = asset.scales;
  const q = asset.rotations;
  for (let i = 0; i < N; i++) {
    let w = q[4 * i], x = q[4 * i + 1], y = q[4 * i + 2], z = q[4 * i + 3];
    const n = Math.hypot(w, x, y, z) || 1;
    w /= n; x /= n; y /= n; z /= n;
    const r00 = 1 - 2 * (y * y + z * z), r01 = 2 * (x * y - w * z), r02 = 2 * (x * z + w * y);
    const r10 = 2 * (x * y + w * z), r11 = 1 - 2 * (x * x + z * z), r12 = 2 * (y * z - w * x);
    const r20 = 2 * (x * z - w * y), r21 = 2 * (y * z + w * x), r22 = 1 - 2 * (x * x + y * y);
    const s0 = halfToFloat(sc[3 * i]) ** 2, s1 = halfToFloat(sc[3 * i + 1]) ** 2, s2 = halfToFloat(sc[3 * i + 2]) ** 2;
    A[4 * i] = r00 * r00 * s0 + r01 * r01 * s1 + r02 * r02 * s2;
    A[4 * i + 1] = r00 * r10 * s0 + r01 * r11 * s1 + r02 * r12 * s2;
    A[4 * i + 2] = r00 * r20 * s0 + r01 * r21 * s1 + r02 * r22 * s2;
    A[4 * i + 3] = r10 * r10 * s0 + r11 * r11 * s1 + r12 * r12 * s2;
    B[2 * i] = r10 * r20 * s0 + r11 * r21 * s1 + r12 * r22 * s2;
    B[2 * i + 1] = r20 * r20 * s0 + r21 * r21 * s1 + r22 * r22 * s2;
  }
  return { A, B };
}

// The depth sort, shared by the worker and the main-thread fallback. Returns far-to-near indices of
// the splats in front of the camera. fwd/tz: the camera's forward row of the world-to-camera matrix.
function depthSort(pos, N, frame, lo, span, fwd, tz, state, stride) {
  stride = Math.max(1, stride | 0);
  const base = frame * N * 3;
  const kx = (fwd[0] * span[0]) / 65535, ky = (fwd[1] * span[1]) / 65535, kz = (fwd[2] * span[2]) / 65535;
  const c0 = fwd[0] * lo[0] + fwd[1] * lo[1] + fwd[2] * lo[2] + tz;
  if (!state.depth || state.depth.length < N) {
    state.depth = new Float32Array(N);
    state.keys = new Uint16Array(N);
  }
  const depth = state.depth, keys = state.keys;
  let dmin = Infinity, dmax = -Infinity;
  for (let i = 0; i < N; i += stride) {
    const j = base + 3 * i;
    const d = c0 + kx * pos[j] + ky * pos[j + 1] + kz * pos[j + 2];
    depth[i] = d;
    if (d > 0.01) { if (d < dmin) dmin = d; if (d > dmax) dmax = d; }
  }
  const counts = new Uint32Array(65536);
  let visible = 0;
  const scale = dmax > dmin ? 65535 / (dmax - dmin) : 0;
  for (let i = 0; i < N; i += stride) {
    const d = depth[i];
    if (d > 0.01) {
      const k = 65535 - ((d - dmin) * scale) | 0; // far first
      keys[i] = k;
      counts[k]++;
      visible++;
    }
  }
  let sum = 0;
  for (let k = 0; k < 65536; k++) { const c = counts[k]; counts[k] = sum; sum += c; }
  const order = new Uint32Array(Math.max(visible, 1));
  for (let i = 0; i < N; i += stride) if (depth[i] > 0.01) order[counts[keys[i]]++] = i;
  return { order, count: visible };
}

function workerSource() {
  return `const depthSort = ${depthSort.toString()};
let pos = null, N = 0, lo = null, span = null; const state = {};
onmessage = (e) => {
  const m = e.data;
  if (m.type === "asset") { pos = m.positions; N = m.N; lo = m.lo; span = m.span; return; }
  if (m.type === "sort" && pos) {
    const r = depthSort(pos, N, m.frame, lo, span, m.fwd, m.tz, state, m.stride);
    postMessage({ id: m.id, order: r.order, count: r.count }, [r.order.buffer]);
  }
};`;
}

const VS = `#version 300 es
precision highp float; precision highp int;
layout(location=0) in vec2 a_corner;
layout(location=1) in uint a_index;
uniform highp usampler2D u_pos;
uniform highp sampler2D u_covA;
uniform highp sampler2D u_covB;
uniform highp sampler2D u_color;
uniform vec3 u_lo, u_span;
uniform mat3 u_R;
uniform vec3 u_t;
uniform vec2 u_focal, u_viewport;
out vec4 v_color;
out vec2 v_uv;
void main() {
  ivec2 tc = ivec2(int(a_index) % ${TEX_W}, int(a_index) / ${TEX_W});
  vec3 p = u_lo + vec3(texelFetch(u_pos, tc, 0).xyz) / 65535.0 * u_span;
  vec3 c = u_R * p + u_t;
  if (c.z < 0.01) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
  vec4 A = texelFetch(u_covA, tc, 0);
  vec2 B = texelFetch(u_covB, tc, 0).xy;
  mat3 S = mat3(A.x, A.y, A.z, A.y, A.w, B.x, A.z, B.x, B.y);
  mat3 Sc = u_R * S * transpose(u_R);
  float iz = 1.0 / c.z;
  vec2 lim = 1.3 * 0.5 * u_viewport / u_focal;
  vec2 xy = clamp(c.xy * iz, -lim, lim) * c.z;
  vec3 j0 = vec3(u_focal.x * iz, 0.0, -u_focal.x * xy.x * iz * iz);
  vec3 j1 = vec3(0.0, u_focal.y * iz, -u_focal.y * xy.y * iz * iz);
  float a = dot(j0, Sc * j0) + 0.3;
  float b = dot(j0, Sc * j1);
  float d = dot(j1, Sc * j1) + 0.3;
  float mid = 0.5 * (a + d);
  float rad = sqrt(max(0.25 * (a - d) * (a - d) + b * b, 0.0));
  float l1 = mid + rad, l2 = max(mid - rad, 0.05);
  vec2 e1 = abs(b) > 1e-9 ? normalize(vec2(b, l1 - a)) : (a >= d ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
  vec2 e2 = vec2(-e1.y, e1.x);
  float s1 = sqrt(l1), s2 = sqrt(l2);
  float r1 = min(3.0 * s1, 1024.0), r2 = min(3.0 * s2, 1024.0);
  vec2 center = u_focal * c.xy * iz + 0.5 * u_viewport;
  vec2 pix = center + a_corner.x * r1 * e1 + a_corner.y * r2 * e2;
  gl_Position = vec4(pix.x / u_viewport.x * 2.0 - 1.0, 1.0 - pix.y / u_viewport.y * 2.0, 0.0, 1.0);
  v_uv = a_corner * vec2(r1 / s1, r2 / s2);
  v_color = texelFetch(u_color, tc, 0);
}`;

const FS = `#version 300 es
precision highp float;
in vec4 v_color;
in vec2 v_uv;
out vec4 o;
void main() {
  float r2 = dot(v_uv, v_uv);
  if (r2 > 9.0) discard;
  float alpha = min(0.99, v_color.a * exp(-0.5 * r2));
  if (alpha < 1.0 / 255.0) discard;
  o = vec4(v_color.rgb * alpha, alpha);
}`;

function el(tag, attrs = {}, style = {}) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  Object.assign(e.style, style);
  return e;
}

function hexToRgb(hex) {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
  const v = m ? parseInt(m[1], 16) : 0x202020;
  return [((v >> 16) & 255) / 255, ((v >> 8) & 255) / 255, (v & 255) / 255];
}

/** The scene's recorded reference camera from the optional header entry `view` (else null):
 *  `viewmat` 16 numbers, world-to-camera row-major (OpenCV axes), and `fovy_deg`. */
function parseView(view) {
  if (!view || !Array.isArray(view.viewmat) || view.viewmat.length !== 16) return null;
  const m = view.viewmat.map(Number);
  const fovy = Number(view.fovy_deg);
  if (!m.every(Number.isFinite) || !(fovy > 0 && fovy < 180)) return null;
  const R = [m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]];
  const t = [m[3], m[7], m[11]];
  // camera centre = -R^T t; forward = third row of R
  const eye = [0, 1, 2].map((j) => -(R[j] * t[0] + R[3 + j] * t[1] + R[6 + j] * t[2]));
  return { eye, forward: [R[6], R[7], R[8]], fovY: (fovy * Math.PI) / 180 };
}

export class Gen4DViewer {
  constructor(container, options = {}) {
    this.container = container;
    this.options = { background: "#1e1e1e", useWorker: true, frameBudgetMs: 50, firstDrawSplats: 25000, minSplats: 4000, ...options };
    this.asset = null;
    this.frame = 0;
    this.numFrames = 0;
    this.playing = false;
    this.fps = 24;
    this.stats = { draws: 0, lastDrawMs: 0, sorts: 0 };
    this._sortId = 0;
    this._appliedSort = -1;
    this._waiters = [];
    this._disposed = false;
    this._buildDom();
    this._initGl();
    this.setBackground(this.options.background);
    this._raf = requestAnimationFrame((t) => this._tick(t));
  }

  // ------------------------------------------------------------------ DOM
  _buildDom() {
    const root = el("div", { class: "gen4d-viewer" }, {
      position: "relative", display: "flex", flexDirection: "column", width: "100%", height: "100%",
      minHeight: "200px", background: "#111", color: "#ddd", font: "12px sans-serif", boxSizing: "border-box",
    });
    const stage = el("div", {}, { position: "relative", flex: "1 1 auto", minHeight: "120px", overflow: "hidden" });
    const canvas = el("canvas", { class: "gen4d-canvas", tabindex: "0" }, {
      position: "absolute", left: "0", top: "0", width: "100%", height: "100%", cursor: "grab", touchAction: "none",
    });
    const message = el("div", { class: "gen4d-message" }, {
      position: "absolute", inset: "0", display: "flex", alignItems: "center", justifyContent: "center",
      textAlign: "center", padding: "12px", color: "#eee", background: "rgba(0,0,0,0.55)", pointerEvents: "none",
    });
    message.textContent = "No 4D preview yet: run the workflow.";
    stage.append(canvas, message);
    const bar = el("div", { class: "gen4d-controls" }, {
      display: "flex", alignItems: "center", gap: "6px", padding: "4px", flex: "0 0 auto", flexWrap: "wrap",
    });
    const playBtn = el("button", { class: "gen4d-play", title: "Play / pause" });
    playBtn.textContent = "Play";
    const scrub = el("input", { class: "gen4d-scrub", type: "range", min: "0", max: "0", step: "1", value: "0",
      title: "Time" }, { flex: "1 1 120px" });
    const label = el("span", { class: "gen4d-frame" }, { minWidth: "64px", fontVariantNumeric: "tabular-nums" });
    label.textContent = "0 / 0";
    const fpsIn = el("input", { class: "gen4d-fps", type: "number", min: "1", max: "120", step: "1", value: "24",
      title: "Playback frames per second" }, { width: "48px" });
    const bg = el("input", { class: "gen4d-bg", type: "color", value: this.options.background, title: "Background colour" },
      { width: "32px", padding: "0" });
    const reset = el("button", { class: "gen4d-reset", title: "Reset view" });
    reset.textContent = "Reset";
    bar.append(playBtn, scrub, label, el("span", {}, {}), fpsIn, bg, reset);
    bar.children[3].textContent = "fps";
    root.append(stage, bar);
    this.container.append(root);
    Object.assign(this, { root, stage, canvas, messageEl: message, playBtn, scrub, label, fpsIn, bgIn: bg, resetBtn: reset });

    const stop = (e) => e.stopPropagation();
    for (const type of ["pointerdown", "pointermove", "pointerup", "wheel", "contextmenu", "keydown", "dblclick"]) {
      root.addEventListener(type, stop);
    }
    playBtn.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    scrub.addEventListener("input", () => { this.pause(); this.setFrame(Number(scrub.value)); });
    fpsIn.addEventListener("change", () => this.setFps(Number(fpsIn.value)));
    bg.addEventListener("input", () => this.setBackground(bg.value));
    reset.addEventListener("click", () => this.resetView());
    this._bindMouse();
    this._resizeObserver = new ResizeObserver(() => (this._dirty = true));
    this._resizeObserver.observe(stage);
  }

  _bindMouse() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 1 || e.button === 2 || e.shiftKey };
      c.setPointerCapture(e.pointerId);
      c.style.cursor = "grabbing";
      e.preventDefault();
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag || !this.cam) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) this.pan(dx, dy);
      else this.orbit(dx, dy);
    });
    const end = (e) => { drag = null; c.style.cursor = "grab"; if (c.hasPointerCapture(e.pointerId)) c.releasePointerCapture(e.pointerId); };
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("wheel", (e) => { e.preventDefault(); this.zoom(e.deltaY); }, { passive: false });
  }

  /** Show (or with "" hide) a text message over the canvas. */
  showMessage(text) {
    this.messageEl.textContent = text || "";
    this.messageEl.style.display = text ? "flex" : "none";
    this.root.dataset.message = text || "";
  }

  // ------------------------------------------------------------------ GL
  _initGl() {
    const gl = this.canvas.getContext("webgl2", { antialias: false, premultipliedAlpha: true, preserveDrawingBuffer: true });
    this.gl = gl;
    if (!gl) { this.showMessage("WebGL2 is not available in this browser: the 4D preview cannot be shown."); return; }
    const compile = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl.VERTEX_SHADER, VS));
    gl.attachShader(prog, compile(gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    this.prog = prog;
    this.u = {};
    for (const n of ["u_pos", "u_covA", "u_covB", "u_color", "u_lo", "u_span", "u_R", "u_t", "u_focal", "u_viewport"]) {
      this.u[n] = gl.getUniformLocation(prog, n);
    }
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    const quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    this.indexBuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuf);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribIPointer(1, 1, gl.UNSIGNED_INT, 0, 0);
    gl.vertexAttribDivisor(1, 1);
    gl.bindVertexArray(null);
    this.drawCount = 0;
  }

  _texture(unit, internal, format, type, w, h, data) {
    const gl = this.gl;
    const tex = gl.createTexture();
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(gl.TEXTURE_2D, tex);
    for (const p of [gl.TEXTURE_MIN_FILTER, gl.TEXTURE_MAG_FILTER]) gl.texParameteri(gl.TEXTURE_2D, p, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texImage2D(gl.TEXTURE_2D, 0, internal, w, h, 0, format, type, data);
    return tex;
  }

  _freeTextures() {
    const gl = this.gl;
    for (const t of this.textures || []) gl.deleteTexture(t);
    this.textures = [];
  }

  // ------------------------------------------------------------------ asset
  /** Fetch and show an asset; a failure shows a message in the widget (never throws). */
  async load(url) {
    this.showMessage("Loading 4D preview…");
    this._loadToken = (this._loadToken || 0) + 1;
    const token = this._loadToken;
    let buffer;
    try {
      const res = await fetch(url, { cache: "no-store" });
      if (!res.ok) throw new Error(`preview asset not found (HTTP ${res.status}); run the node again`);
      buffer = await res.arrayBuffer();
    } catch (err) {
      if (token === this._loadToken) this._fail(err);
      return false;
    }
    if (token !== this._loadToken) return false;
    return this.setAsset(buffer);
  }

  _fail(err) {
    this.asset = null;
    this.numFrames = 0;
    this.drawCount = 0;
    this._dirty = true;
    const text = String((err && err.message) || err);
    this.showMessage(`Cannot show the 4D preview: ${text}`);
    this.root.dataset.state = "error";
  }

  /** Show an asset from its bytes; returns false (and shows a message) if it is corrupt. */
  setAsset(buffer) {
    let asset;
    try {
      if (!this.gl) throw new Error("WebGL2 is not available");
      asset = parseAsset(buffer);
    } catch (err) {
      this._fail(err);
      return false;
    }
    const gl = this.gl;
    this.asset = asset;
    this.numFrames = asset.numFrames;
    this.frame = 0;
    this.setFps(asset.fps);
    if (asset.background) this.setBackground(asset.background);
    const N = asset.numSplats;
    const rows = Math.max(1, Math.ceil(N / TEX_W));
    this._rows = rows;
    this._freeTextures();
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    const cov = buildCovariances(asset, rows);
    const color = new Uint8Array(TEX_W * rows * 4);
    color.set(asset.color);
    this.texPos = this._texture(0, gl.RGB16UI, gl.RGB_INTEGER, gl.UNSIGNED_SHORT, TEX_W, rows, null);
    this.textures.push(this.texPos,
      this._texture(1, gl.RGBA32F, gl.RGBA, gl.FLOAT, TEX_W, rows, cov.A),
      this._texture(2, gl.RG32F, gl.RG, gl.FLOAT, TEX_W, rows, cov.B),
      this._texture(3, gl.RGBA8, gl.RGBA, gl.UNSIGNED_BYTE, TEX_W, rows, color));
    this._uploadedFrame = -1;
    this.scrub.max = String(Math.max(0, asset.numFrames - 1));
    this.scrub.value = "0";
    this._updateLabel();
    this._startSorter();
    this.resetView();
    this.showMessage(N === 0 ? "The 4D preview holds no splats." : "");
    this.root.dataset.state = "ready";
    this.root.dataset.splats = String(N);
    if (asset.numFrames > 1) this.play();
    return true;
  }

  _uploadFrame() {
    const a = this.asset;
    if (!a || this._uploadedFrame === this.frame) return;
    const gl = this.gl;
    const N = a.numSplats;
    const data = a.positions.subarray(this.frame * N * 3, (this.frame + 1) * N * 3);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texPos);
    const full = Math.floor(N / TEX_W);
    if (full > 0) gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, TEX_W, full, gl.RGB_INTEGER, gl.UNSIGNED_SHORT, data.subarray(0, full * TEX_W * 3));
    const rest = N - full * TEX_W;
    if (rest > 0) gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, full, rest, 1, gl.RGB_INTEGER, gl.UNSIGNED_SHORT, data.subarray(full * TEX_W * 3));
    this._uploadedFrame = this.frame;
  }

  // ------------------------------------------------------------------ sorting
  _startSorter() {
    if (this.worker) { this.worker.terminate(); this.worker = null; }
    const a = this.asset;
    this._sortState = {};
    this._sortPending = false;
    this._appliedSort = -1;
    if (this.options.useWorker && typeof Worker !== "undefined" && a.numSplats > 0) {
      try {
        const url = URL.createObjectURL(new Blob([workerSource()], { type: "text/javascript" }));
        this.worker = new Worker(url);
        URL.revokeObjectURL(url);
        this.worker.onmessage = (e) => this._applySort(e.data);
        this.worker.onerror = () => { this.worker = null; };
        // The worker keeps its own copy of all frames' positions; later messages are tiny.
        this.worker.postMessage({ type: "asset", positions: a.positions.slice(), N: a.numSplats, lo: a.lo, span: a.span });
      } catch (err) {
        this.worker = null;
      }
    }
    // Level of detail: draw every stride-th splat so one frame stays near the time budget; starts
    // coarse for big assets and adapts after each draw (a real GPU reaches stride 1 at once).
    this._stride = 1;
    while (a.numSplats / this._stride > this.options.firstDrawSplats) this._stride *= 2;
    this._costPerSplat = null;
    this._needSort = true;
  }

  _adaptLod(dt) {
    const a = this.asset;
    if (!a || this.drawCount < 1 || this.options.adaptive === false) return;
    const cost = dt / this.drawCount;
    this._costPerSplat = this._costPerSplat == null ? cost : 0.5 * this._costPerSplat + 0.5 * cost;
    const ideal = (a.numSplats * this._costPerSplat) / this.options.frameBudgetMs;
    let next = this._stride;
    if (ideal > this._stride * 1.5 || ideal < this._stride / 3) {
      next = 1;
      while (next < ideal && next < 1024) next *= 2;
    }
    // Never thin out below minSplats drawn: small assets always draw whole.
    while (next > 1 && a.numSplats / next < this.options.minSplats) next /= 2;
    if (next !== this._stride) {
      this._stride = next;
      this._needSort = true;
    }
    this.stats.stride = this._stride;
    this.root.dataset.stride = String(this._stride);
  }

  _requestSort() {
    const a = this.asset;
    if (!a || !this.cam) return;
    const id = ++this._sortId;
    const fwd = this.cam.R.slice(6, 9);
    const tz = this.cam.t[2];
    this._sortPending = true;
    if (this.worker) {
      this.worker.postMessage({ type: "sort", id, frame: this.frame, fwd, tz, stride: this._stride });
    } else {
      const r = depthSort(a.positions, a.numSplats, this.frame, a.lo, a.span, fwd, tz, this._sortState, this._stride);
      this._applySort({ id, order: r.order, count: r.count });
    }
  }

  _applySort(msg) {
    if (!this.gl || msg.id < this._appliedSort) return;
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuf);
    gl.bufferData(gl.ARRAY_BUFFER, msg.order, gl.DYNAMIC_DRAW);
    this.drawCount = msg.count;
    this._appliedSort = msg.id;
    this.stats.sorts++;
    if (msg.id === this._sortId) this._sortPending = false;
    this._dirty = true;
  }

  // ------------------------------------------------------------------ camera
  /** Start at the scene's recorded reference camera when the asset names one (the view its reference
   *  video was seen from, roll dropped); else frame the asset's bounds, looking along +z with -y up. */
  resetView() {
    const a = this.asset;
    const lo = a ? a.lo : [-1, -1, -1];
    const span = a ? a.span : [2, 2, 2];
    const radius = Math.max(1e-3, 0.5 * Math.hypot(span[0], span[1], span[2]));
    const center = [lo[0] + span[0] / 2, lo[1] + span[1] / 2, lo[2] + span[2] / 2];
    const rec = a ? a.view : null;
    this.fovY = rec ? rec.fovY : FOV_Y;
    if (rec) {
      const f = rec.forward;
      const fn = Math.hypot(f[0], f[1], f[2]) || 1;
      const fwd = f.map((x) => x / fn);
      // orbit about the point of the optical axis nearest the bounds' centre (in front of the camera)
      const along = fwd.reduce((acc, x, i) => acc + x * (center[i] - rec.eye[i]), 0);
      const distance = Math.max(radius * 0.05, along);
      this.view = {
        target: rec.eye.map((x, i) => x + distance * fwd[i]),
        distance,
        yaw: Math.atan2(fwd[0], fwd[2]),
        pitch: Math.asin(Math.max(-1, Math.min(1, fwd[1]))),
        radius,
      };
    } else {
      this.view = { target: center, distance: (radius / Math.tan(FOV_Y / 2)) * 1.05, yaw: 0, pitch: 0, radius };
    }
    this._viewChanged();
  }

  orbit(dx, dy) {
    this.view.yaw -= dx * 0.008;
    this.view.pitch = Math.max(-1.55, Math.min(1.55, this.view.pitch - dy * 0.008));
    this._viewChanged();
  }

  pan(dx, dy) {
    const h = Math.max(1, this.canvas.clientHeight);
    const k = (2 * this.view.distance * Math.tan((this.fovY || FOV_Y) / 2)) / h;
    const R = this.cam.R;
    for (let i = 0; i < 3; i++) this.view.target[i] -= k * (dx * R[i] + dy * R[3 + i]);
    this._viewChanged();
  }

  zoom(delta) {
    this.view.distance = Math.max(this.view.radius * 0.02, this.view.distance * Math.exp(delta * 0.0015));
    this._viewChanged();
  }

  _viewChanged() {
    const v = this.view;
    const cp = Math.cos(v.pitch);
    // forward (camera z); pitch > 0 looks down (+y is down in OpenCV world coordinates)
    const f = [cp * Math.sin(v.yaw), Math.sin(v.pitch), cp * Math.cos(v.yaw)];
    const down = [0, 1, 0];
    let r = [down[1] * f[2] - down[2] * f[1], down[2] * f[0] - down[0] * f[2], down[0] * f[1] - down[1] * f[0]];
    const rn = Math.hypot(...r) || 1;
    r = r.map((x) => x / rn);
    const d = [f[1] * r[2] - f[2] * r[1], f[2] * r[0] - f[0] * r[2], f[0] * r[1] - f[1] * r[0]];
    const eye = v.target.map((x, i) => x - v.distance * f[i]);
    const R = [...r, ...d, ...f]; // rows: right, down, forward (world -> camera)
    const t = [0, 1, 2].map((i) => -(R[3 * i] * eye[0] + R[3 * i + 1] * eye[1] + R[3 * i + 2] * eye[2]));
    this.cam = { R, t, eye };
    this._needSort = true;
    this._dirty = true;
  }

  // ------------------------------------------------------------------ playback
  setFrame(i) {
    const T = this.numFrames;
    if (!T) return;
    const f = Math.max(0, Math.min(T - 1, Math.round(Number(i) || 0)));
    if (f !== this.frame) {
      this.frame = f;
      this._needSort = true;
      this._dirty = true;
    }
    this.scrub.value = String(this.frame);
    this._updateLabel();
  }

  _updateLabel() {
    this.label.textContent = `${this.frame + 1} / ${this.numFrames}`;
    this.root.dataset.frame = String(this.frame);
  }

  play() {
    if (this.numFrames < 2) return;
    this.playing = true;
    this._playStart = null;
    this.playBtn.textContent = "Pause";
  }

  pause() {
    this.playing = false;
    this.playBtn.textContent = "Play";
  }

  setFps(fps) {
    const f = Math.max(1, Math.min(120, Number(fps) || 24));
    this.fps = f;
    this.fpsIn.value = String(Math.round(f * 100) / 100);
    this._playStart = null;
  }

  setBackground(hex) {
    this.background = hexToRgb(hex);
    if (this.bgIn && this.bgIn.value !== hex && /^#[0-9a-f]{6}$/i.test(hex)) this.bgIn.value = hex;
    this._dirty = true;
  }

  /** Resolves once the latest frame/view change has been sorted and drawn. */
  ready() {
    if (!this._needSort && !this._sortPending && !this._dirty) return Promise.resolve();
    const target = this._sortId + (this._needSort ? 1 : 0);
    return new Promise((resolve) => this._waiters.push({ target, resolve }));
  }

  /** Redraw every animation frame for ``ms`` while orbiting; resolves to {fps, draws, sorts}. */
  benchmark(ms = 2000) {
    return new Promise((resolve) => {
      const start = performance.now();
      const d0 = this.stats.draws, s0 = this.stats.sorts;
      this._forceDraw = true;
      const step = () => {
        const now = performance.now();
        if (now - start >= ms) {
          this._forceDraw = false;
          const sec = (now - start) / 1000;
          resolve({ fps: (this.stats.draws - d0) / sec, draws: this.stats.draws - d0, sorts: this.stats.sorts - s0 });
          return;
        }
        this.orbit(3, 0);
        requestAnimationFrame(step);
      };
      requestAnimationFrame(step);
    });
  }

  _tick(now) {
    if (this._disposed) return;
    this._raf = requestAnimationFrame((t) => this._tick(t));
    if (this.playing && this.numFrames > 1) {
      if (this._playStart == null) this._playStart = now - (this.frame / this.fps) * 1000;
      const f = Math.floor(((now - this._playStart) / 1000) * this.fps) % this.numFrames;
      if (f !== this.frame) this.setFrame(f);
    }
    if (this._needSort && this.asset) {
      this._needSort = false;
      this._requestSort();
    }
    if (this._drewAt != null) this._adaptLod(now - this._drewAt);
    this._drewAt = null;
    if (this._dirty || this._forceDraw) {
      this._draw();
      if (this.drawCount > 0) this._drewAt = now;
    }
    if (this._waiters.length && !this._dirty) {
      // Resolve waiters whose requested sort (or a later one) has been applied and drawn.
      const done = this._waiters.filter((w) => this._appliedSort >= w.target || !this.asset);
      this._waiters = this._waiters.filter((w) => !done.includes(w));
      done.forEach((w) => w.resolve());
    }
  }

  _draw() {
    const gl = this.gl;
    this._dirty = false;
    if (!gl) return;
    const t0 = performance.now();
    const dpr = Math.min(2, window.devicePixelRatio || 1);
    const w = Math.max(1, Math.round(this.stage.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.stage.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) { this.canvas.width = w; this.canvas.height = h; }
    gl.viewport(0, 0, w, h);
    const [r, g, b] = this.background;
    gl.clearColor(r, g, b, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.asset && this.drawCount > 0 && this.cam) {
      this._uploadFrame();
      const a = this.asset;
      const focal = (0.5 * h) / Math.tan((this.fovY || FOV_Y) / 2);
      gl.useProgram(this.prog);
      gl.uniform1i(this.u.u_pos, 0);
      gl.uniform1i(this.u.u_covA, 1);
      gl.uniform1i(this.u.u_covB, 2);
      gl.uniform1i(this.u.u_color, 3);
      this.textures.forEach((tex, i) => { gl.activeTexture(gl.TEXTURE0 + i); gl.bindTexture(gl.TEXTURE_2D, tex); });
      gl.uniform3fv(this.u.u_lo, a.lo);
      gl.uniform3fv(this.u.u_span, a.span);
      gl.uniformMatrix3fv(this.u.u_R, true, this.cam.R); // row-major rows given: transpose on upload
      gl.uniform3fv(this.u.u_t, this.cam.t);
      gl.uniform2f(this.u.u_focal, focal, focal);
      gl.uniform2f(this.u.u_viewport, w, h);
      gl.disable(gl.DEPTH_TEST);
      gl.enable(gl.BLEND);
      gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
      gl.bindVertexArray(this.vao);
      gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, this.drawCount);
      gl.bindVertexArray(null);
    }
    this.stats.draws++;
    this.stats.lastDrawMs = performance.now() - t0;
  }

  dispose() {
    this._disposed = true;
    cancelAnimationFrame(this._raf);
    if (this.worker) this.worker.terminate();
    this._resizeObserver.disconnect();
    if (this.gl) this._freeTextures();
    const lose = this.gl && this.gl.getExtension("WEBGL_lose_context");
    if (lose) lose.loseContext();
    this.root.remove();
  }
}

/** Mount a viewer in ``container`` (an element that gives it its size). */
export function createViewer(container, options = {}) {
  return new Gen4DViewer(container, options);
}
