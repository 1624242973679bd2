// SPDX-License-Identifier: Apache-2.0
// ComfyUI extension: shows a Gen4D node's notes on the node. A node that could not do something as
// asked (an option it dropped, a fallback it took, a camera at which it could not place a part) returns
// UI text `text: [sentence, ...]` beside its outputs (nodes/host.py `with_notes`); after the node ran,
// the sentences appear in a small panel under its widgets. A run without notes clears the panel.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "Gen4D.Notes";
const NOTES_MAX_HEIGHT = 160;
const REGISTERED = Symbol.for("gen4d.notes.registered");
const alreadyRegistered = Boolean(globalThis[REGISTERED]) ||
  (Array.isArray(app?.extensions) && app.extensions.some((e) => e?.name === EXTENSION_NAME));

function showNotes(node, lines) {
  if (!node.gen4dNotes) {
    if (!lines.length) return;
    const panel = document.createElement("div");
    Object.assign(panel.style, {
      whiteSpace: "pre-wrap", overflowY: "auto", maxHeight: `${NOTES_MAX_HEIGHT}px`, padding: "6px 8px",
      boxSizing: "border-box",
      font: "12px sans-serif", color: "#f3e3b3", background: "rgba(120, 90, 20, 0.35)", borderRadius: "4px",
    });
    node.gen4dNotes = panel;
    node.addDOMWidget("gen4d_notes", "GEN4D_NOTES", panel, {
      serialize: false,
      hideOnZoom: false,
      // as tall as its text (up to the panel's own limit, then it scrolls), nothing while there are no notes
      getMinHeight: () => (panel.style.display === "none" ? 0 : Math.min(NOTES_MAX_HEIGHT, panel.scrollHeight || 40)),
    });
  }
  node.gen4dNotes.textContent = lines.join("\n\n");
  node.gen4dNotes.style.display = lines.length ? "block" : "none";
  // the node grows to show the notes whole; it never shrinks below the size the user gave it
  requestAnimationFrame(() => {
    const least = node.computeSize?.();
    if (least && (least[0] > node.size[0] || least[1] > node.size[1])) {
      node.setSize([Math.max(node.size[0], least[0]), Math.max(node.size[1], least[1])]);
    }
    node.setDirtyCanvas?.(true, true);
  });
}

if (!alreadyRegistered) {
  globalThis[REGISTERED] = true;
  app.registerExtension({
    name: EXTENSION_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
      if (!String(nodeData?.name ?? "").startsWith("Gen4D_")) return;
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const lines = Array.isArray(message?.text) ? message.text.map((x) => String(x)) : [];
        showNotes(this, lines);
      };
    },
  });
}
