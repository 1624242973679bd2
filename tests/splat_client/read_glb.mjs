// Reads .glb files with glTF-Transform (an independent glTF 2.0 reader) and prints, per file, the splat
// count and the range of each KHR_gaussian_splatting attribute as JSON lines. Usage: node read_glb.mjs a.glb ...
import { NodeIO } from '@gltf-transform/core';

const io = new NodeIO();
const range = (accessor) => {
    const n = accessor.getCount();
    const width = accessor.getElementSize();
    const min = new Array(width).fill(Infinity);
    const max = new Array(width).fill(-Infinity);
    const el = [];
    for (let i = 0; i < n; i++) {
        accessor.getElement(i, el);
        for (let c = 0; c < width; c++) {
            if (el[c] < min[c]) min[c] = el[c];
            if (el[c] > max[c]) max[c] = el[c];
        }
    }
    return { count: n, type: accessor.getType(), min, max };
};

for (const file of process.argv.slice(2)) {
    const doc = await io.read(file);
    const root = doc.getRoot();
    const out = { file, extensionsUsed: [], primitives: [] };
    const json = await io.binaryToJSON(await import('node:fs').then((fs) => fs.readFileSync(file)));
    out.extensionsUsed = json.json.extensionsUsed || [];
    out.nodeRotation = (json.json.nodes || [])[0]?.rotation || null;
    for (const mesh of root.listMeshes()) {
        for (const prim of mesh.listPrimitives()) {
            const attrs = {};
            for (const semantic of prim.listSemantics()) attrs[semantic] = range(prim.getAttribute(semantic));
            out.primitives.push({ mode: prim.getMode(), attributes: attrs });
        }
    }
    console.log(JSON.stringify(out));
}
