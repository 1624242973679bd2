// SPDX-License-Identifier: Apache-2.0
// ComfyUI extension: mounts the Gen4D 4D splat viewer (gen4d_viewer.js) on every Gen4D_Preview4D
// node. After the node runs, its UI output `gen4d_preview: [{filename, subfolder, type}]` names a
// .g4d asset in ComfyUI's temp folder; the viewer fetches it through ComfyUI's /view route.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { createViewer } from "./gen4d_viewer.js";

const NODE_ID = "Gen4D_Preview4D";

function viewUrl(entry) {
  const q = new URLSearchParams({
    filename: String(entry.filename ?? ""),
    subfolder: String(entry.subfolder ?? ""),
    type: String(entry.type ?? "temp"),
    rand: String(Math.random()),
  });
  const route = `/view?${q.toString()}`;
  return typeof api?.apiURL === "function" ? api.apiURL(route) : route;
}

// The pack registers this folder once (WEB_DIRECTORY); should a ComfyUI still serve it twice (a copy of
// the pack under another folder name), register once and stay quiet on the second import.
const EXTENSION_NAME = "Gen4D.Preview4D";
const REGISTERED = Symbol.for("gen4d.preview4d.registered");
const alreadyRegistered = Boolean(globalThis[REGISTERED]) ||
  (Array.isArray(app?.extensions) && app.extensions.some((e) => e?.name === EXTENSION_NAME));

if (!alreadyRegistered) {
  globalThis[REGISTERED] = true;
  app.registerExtension({
    name: EXTENSION_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (nodeData?.name !== NODE_ID) return;

      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        const host = document.createElement("div");
        Object.assign(host.style, { width: "100%", height: "100%", minHeight: "260px" });
        try {
          this.gen4dViewer = createViewer(host);
        } catch (err) {
          host.textContent = `Gen4D viewer failed to start: ${err?.message ?? err}`;
        }
        this.addDOMWidget("gen4d_viewer", "GEN4D_VIEWER", host, {
          serialize: false,
          hideOnZoom: false,
          getMinHeight: () => 300,
        });
        this.setSize([Math.max(this.size?.[0] ?? 0, 440), Math.max(this.size?.[1] ?? 0, 440)]);
        return result;
      };

      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const viewer = this.gen4dViewer;
        if (!viewer) return;
        const entry = message?.gen4d_preview?.[0];
        if (!entry || !entry.filename) {
          viewer.showMessage("Cannot show the 4D preview: the node output names no preview asset.");
          return;
        }
        viewer.load(viewUrl(entry));
      };

      const onRemoved = nodeType.prototype.onRemoved;
      nodeType.prototype.onRemoved = function () {
        this.gen4dViewer?.dispose();
        this.gen4dViewer = null;
        return onRemoved?.apply(this, arguments);
      };
    },
  });
}
