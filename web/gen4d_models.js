// SPDX-License-Identifier: Apache-2.0
// ComfyUI extension: Gen4D model pickers in opened workflows. A workflow names the model it was made with
// (e.g. "Wan2.1-I2V-14B-480P-Diffusers"); a picker keeps that name when the user has it, and otherwise
// switches to the first model the user does have, so a shared workflow runs without re-picking every loader.
// With no model of that kind present the saved name stays, telling the user which model the graph expects.
// Pickers are the combo inputs the pack marks with `gen4d_model_kind` (nodes/placement.py model_in), and the
// posed-frames dataset picker, marked `gen4d_dataset_picker` (nodes/posed_frames.py), which behaves the same.
import { app } from "../../scripts/app.js";

const EXTENSION_NAME = "Gen4D.ModelPickers";
const PLACEHOLDERS = new Set(["(no models found)", "(no datasets found)"]);
const PICKERS = Symbol("gen4d.modelPickers");

function pickerNames(nodeData) {
  const names = [];
  for (const section of ["required", "optional"]) {
    for (const [name, spec] of Object.entries(nodeData?.input?.[section] ?? {})) {
      if (Array.isArray(spec) && spec[1] && typeof spec[1] === "object" && (spec[1].gen4d_model_kind || spec[1].gen4d_dataset_picker)) names.push(name);
    }
  }
  return names;
}

function choosePresent(node) {
  for (const name of node.constructor?.[PICKERS] ?? []) {
    const widget = node.widgets?.find((w) => w.name === name);
    const values = widget?.options?.values;
    if (!widget || !Array.isArray(values)) continue;
    const present = values.filter((v) => !PLACEHOLDERS.has(v));
    if (!present.length || present.includes(widget.value)) continue;
    widget.value = present[0];
    widget.callback?.(widget.value);
  }
}

app.registerExtension({
  name: EXTENSION_NAME,
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const names = pickerNames(nodeData);
    if (names.length) nodeType[PICKERS] = names;
  },
  loadedGraphNode(node) {
    choosePresent(node);
  },
});
