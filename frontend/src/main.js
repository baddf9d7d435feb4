// sammed viewer: three orthogonal NiiVue slice views; clicks go to the server as world RAS
// points, scribbles and lassos as voxel polylines/polygons; the changed region of the label map
// comes back and is painted into the overlay.
import { Niivue, NVImage, SLICE_TYPE, SHOW_RENDER, DRAG_MODE } from "@niivue/niivue";
import { Api, ApiError } from "./api.js";
import { cssColour, labelLut } from "./palette.js";

const $ = (id) => document.getElementById(id);
const api = new Api();
// The click tool leaves a left drag to NiiVue (crosshair); the drawing tools take the drag themselves.
const CLICK_MOUSE = {
  leftButton: { primary: DRAG_MODE.crosshair, withShift: DRAG_MODE.crosshair, withCtrl: DRAG_MODE.windowing },
  rightButton: DRAG_MODE.none,
  centerButton: DRAG_MODE.windowing,
};
const DRAW_MOUSE = { ...CLICK_MOUSE, leftButton: { primary: DRAG_MODE.none, withShift: DRAG_MODE.none, withCtrl: DRAG_MODE.windowing } };
const nv = new Niivue({
  backColor: [0.07, 0.075, 0.1, 1],
  crosshairColor: [0.3, 0.7, 1, 0.5],
  crosshairWidth: 1,
  show3Dcrosshair: false,
  dragAndDropEnabled: false,
  multiplanarShowRender: SHOW_RENDER.NEVER,
  isColorbar: false,
  mouseEventConfig: CLICK_MOUSE,
});
const viewer = { nv, api, busy: 0, lastReply: null, activeObject: 1, objects: [], names: {}, overlay: null, tool: "click" };
window.sammedViewer = viewer;

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").style.color = isError ? "#ff8a80" : "";
}

function fail(error) {
  status(error instanceof ApiError ? error.message : `error: ${error.message || error}`, true);
}

// Requests run one after another so clicks are applied in the order they were made.
let queue = Promise.resolve();
function enqueue(task) {
  viewer.busy += 1;
  const run = queue.then(task).catch(fail).finally(() => {
    viewer.busy -= 1;
  });
  queue = run;
  return run;
}

function setEnabled(open) {
  for (const id of ["new-object", "save", "download"]) $(id).disabled = !open;
}

// ------------------------------------------------------------------ window / level
function applyWindow() {
  const volume = nv.volumes[0];
  if (!volume) return;
  const width = Math.max(1, Number($("window").value));
  const level = Number($("level").value);
  volume.cal_min = level - width / 2;
  volume.cal_max = level + width / 2;
  nv.updateGLVolume();
}

function showWindow() {
  const volume = nv.volumes[0];
  if (!volume) return;
  $("window").value = Math.round(volume.cal_max - volume.cal_min);
  $("level").value = Math.round((volume.cal_max + volume.cal_min) / 2);
}

$("window").addEventListener("change", applyWindow);
$("level").addEventListener("change", applyWindow);
$("preset").addEventListener("change", () => {
  const value = $("preset").value;
  const volume = nv.volumes[0];
  if (value === "auto" && volume) {
    volume.cal_min = volume.robust_min ?? volume.global_min;
    volume.cal_max = volume.robust_max ?? volume.global_max;
    nv.updateGLVolume();
    showWindow();
  } else if (value) {
    const [width, level] = value.split(",").map(Number);
    $("window").value = width;
    $("level").value = level;
    applyWindow();
  }
  $("preset").value = "";
});
nv.onIntensityChange = showWindow;

// ------------------------------------------------------------------ objects and history
function renderObjects() {
  const box = $("objects");
  box.replaceChildren();
  const ids = new Set(viewer.objects.map((o) => o.object_id));
  ids.add(viewer.activeObject);
  for (const id of [...ids].sort((a, b) => a - b)) {
    const info = viewer.objects.find((o) => o.object_id === id);
    const chip = document.createElement("button");
    chip.className = "object" + (id === viewer.activeObject ? " active" : "");
    chip.dataset.objectId = id;
    chip.title = "click: add prompts to this object · double-click: rename it";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = cssColour(id);
    const name = viewer.names[id] || (info ? info.name : `object ${id}`);
    chip.append(swatch, name + (info ? ` (${info.voxels})` : ""));
    chip.addEventListener("click", () => {
      // Only the highlight moves: replacing the chips here would swallow a double-click (rename).
      viewer.activeObject = id;
      for (const other of box.children) other.classList.toggle("active", other === chip);
    });
    chip.addEventListener("dblclick", () => renameObject(id, name));
    box.append(chip);
  }
}

function renameObject(id, current) {
  const name = window.prompt(`name of object ${id}`, current);
  if (name === null || !name.trim() || name === current) return;
  enqueue(async () => {
    const reply = await api.rename(id, name.trim());
    viewer.names[id] = reply.name;
    await refreshState();
    status(`object ${id} is now '${reply.name}'`);
  });
}

async function refreshState() {
  const state = await api.state();
  viewer.objects = state.objects;
  for (const info of state.objects) viewer.names[info.object_id] = info.name;
  $("undo").disabled = !state.can_undo;
  $("redo").disabled = !state.can_redo;
  renderObjects();
  return state;
}

async function paintRegion(region) {
  const overlay = viewer.overlay;
  if (!overlay) return;
  const { values, offset, shape } = await api.labels(region);
  const [ni, nj] = [overlay.hdr.dims[1], overlay.hdr.dims[2]];
  const img = overlay.img;
  let source = 0;
  for (let k = 0; k < shape[2]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      let target = offset[0] + ni * (offset[1] + j + nj * (offset[2] + k));
      for (let i = 0; i < shape[0]; i++) img[target++] = Math.min(values[source++], 255);
    }
  }
  nv.updateGLVolume();
}

async function afterAction(reply, what) {
  viewer.lastReply = reply;
  if (reply.changed) await paintRegion(reply.changed);
  viewer.activeObject = reply.active_object;
  await refreshState();
  const seconds = reply.seconds.toFixed(2);
  status(`${what}: object ${reply.object_id} has ${reply.object_voxels} voxels (${seconds} s)`);
}

function history(name) {
  return enqueue(async () => {
    const reply = await api.action(name);
    if (!reply.applied) return status(`nothing to ${name}`);
    await afterAction(reply, name);
  });
}

$("undo").addEventListener("click", () => history("undo"));
$("redo").addEventListener("click", () => history("redo"));
$("new-object").addEventListener("click", () =>
  enqueue(async () => {
    const created = await api.action("objects");
    viewer.activeObject = created.object_id;
    viewer.names[created.object_id] = created.name;
    renderObjects();
    status(`object ${viewer.activeObject}: click on the structure`);
  })
);

// ------------------------------------------------------------------ clicks, scribbles, lassos
const canvas = $("gl");
const ink = $("ink");
const TOOL_HINTS = {
  click: "Left click adds, right click or Shift+click removes.",
  scribble: "Drag a scribble over the structure; Shift+drag (or right drag) marks background.",
  lasso: "Drag a closed loop on one slice to add it; Shift+drag (or right drag) cuts it out.",
};

function setTool(tool) {
  viewer.tool = tool;
  $("tool").value = tool;
  nv.setMouseEventConfig(tool === "click" ? CLICK_MOUSE : DRAW_MOUSE);
  if (api.session) status(TOOL_HINTS[tool]);
}
$("tool").addEventListener("change", () => setTool($("tool").value));

// The view under a pointer event: world RAS mm and which tile (0 axial, 1 coronal, 2 sagittal), or null.
function pointerAt(event) {
  const rect = canvas.getBoundingClientRect();
  const dpr = nv.uiData.dpr || window.devicePixelRatio || 1;
  const xy = [(event.clientX - rect.left) * dpr, (event.clientY - rect.top) * dpr];
  const frac = nv.canvasPos2frac(xy);
  if (frac[0] < 0) return null; // outside every slice view
  const tile = nv.screenSlices.find(({ leftTopWidthHeight: [l, t, w, h] }) => xy[0] >= l && xy[0] <= l + w && xy[1] >= t && xy[1] <= t + h);
  return { mm: Array.from(nv.frac2mm(frac)).slice(0, 3), view: tile ? tile.axCorSag : -1, css: [xy[0] / dpr, xy[1] / dpr] };
}

function inverse3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const co = [e * i - f * h, c * h - b * i, b * f - c * e, f * g - d * i, a * i - c * g, c * d - a * f, d * h - e * g, b * g - a * h, a * e - b * d];
  const det = a * co[0] + b * co[3] + c * co[6];
  return [0, 1, 2].map((r) => [0, 1, 2].map((col) => co[r * 3 + col] / det));
}

// World RAS mm -> continuous voxel (i, j, k) of the session's image (the server's geometry).
function voxelOf(ras) {
  const { origin_lps: origin, direction, spacing } = api.session;
  const inv = inverse3([0, 1, 2].map((r) => [0, 1, 2].map((a) => direction[r][a] * spacing[a])));
  const rel = [-ras[0] - origin[0], -ras[1] - origin[1], ras[2] - origin[2]];
  return inv.map((row) => row[0] * rel[0] + row[1] * rel[1] + row[2] * rel[2]);
}

// At most `limit` points, evenly picked (the server caps polylines and polygons).
function thinned(points, limit) {
  if (points.length <= limit) return points;
  const step = points.length / limit;
  return Array.from({ length: limit }, (_, n) => points[Math.floor(n * step)]);
}

let press = null;
let stroke = null; // a scribble or lasso being drawn: {tool, positive, view, objectId, voxels, css}

function drawInk() {
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (ink.width !== Math.round(rect.width * dpr)) ink.width = Math.round(rect.width * dpr);
  if (ink.height !== Math.round(rect.height * dpr)) ink.height = Math.round(rect.height * dpr);
  const ctx = ink.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  if (!stroke || !stroke.css.length) return;
  ctx.strokeStyle = stroke.positive ? cssColour(stroke.objectId) : "#ffffff";
  ctx.setLineDash(stroke.positive ? [] : [5, 4]);
  ctx.lineWidth = 2;
  ctx.beginPath();
  stroke.css.forEach(([x, y], n) => (n ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  if (stroke.tool === "lasso") ctx.closePath();
  ctx.stroke();
}

function extendStroke(event) {
  const at = pointerAt(event);
  if (!at || at.view !== stroke.view) return; // points off the slice it started on are dropped
  const voxel = voxelOf(at.mm);
  const last = stroke.voxels[stroke.voxels.length - 1];
  if (last && Math.hypot(...voxel.map((v, a) => v - last[a])) < 0.75) return; // about one point per voxel
  stroke.voxels.push(voxel);
  stroke.css.push(at.css);
  drawInk();
}

function sendStroke(done) {
  const shape = api.session.shape;
  const clamp = (v, a) => Math.min(Math.max(v, 0), shape[a] - 1);
  const { positive, objectId } = done;
  if (done.tool === "scribble") {
    const voxels = thinned(done.voxels.map((p) => p.map(clamp)), 4000);
    return enqueue(async () => {
      status(`${positive ? "adding" : "removing"} along a scribble of ${voxels.length} points…`);
      await afterAction(await api.scribble(voxels, positive, objectId), positive ? "scribble" : "negative scribble");
    });
  }
  // The lasso's slice: the voxel axis closest to the view's normal (axial: z, coronal: y, sagittal: x in LPS).
  const normal = [2, 1, 0][done.view];
  const direction = api.session.direction;
  const axis = [0, 1, 2].reduce((best, a) => (Math.abs(direction[normal][a]) > Math.abs(direction[normal][best]) ? a : best), 0);
  const index = Math.round(clamp(done.voxels[0][axis], axis));
  const kept = [0, 1, 2].filter((a) => a !== axis);
  const polygon = thinned(done.voxels.map((p) => kept.map((a) => clamp(p[a], a))), 2000);
  if (polygon.length < 3) return status("a lasso needs a larger loop: drag around the region", true);
  return enqueue(async () => {
    status(`${positive ? "adding" : "cutting"} a lasso of ${polygon.length} vertices on slice ${"ijk"[axis]}=${index}…`);
    await afterAction(await api.lasso(polygon, "ijk"[axis], index, positive, objectId), positive ? "lasso" : "lasso cut");
  });
}

canvas.addEventListener("contextmenu", (event) => event.preventDefault());
canvas.addEventListener("pointerdown", (event) => {
  const ctrl = event.ctrlKey || event.metaKey;
  press = { x: event.clientX, y: event.clientY, button: event.button, ctrl };
  if (viewer.tool === "click" || !api.session || ctrl || (event.button !== 0 && event.button !== 2)) return;
  const at = pointerAt(event);
  if (!at || at.view < 0 || at.view > 2) return;
  const positive = event.button === 0 && !event.shiftKey;
  stroke = { tool: viewer.tool, positive, view: at.view, objectId: viewer.activeObject, voxels: [], css: [] };
  canvas.setPointerCapture(event.pointerId);
  extendStroke(event);
});
canvas.addEventListener("pointermove", (event) => {
  if (stroke) extendStroke(event);
});
canvas.addEventListener("pointerup", (event) => {
  const start = press;
  press = null;
  if (stroke) {
    extendStroke(event);
    const done = stroke;
    stroke = null;
    drawInk();
    if (done.voxels.length) sendStroke(done);
    return;
  }
  if (viewer.tool !== "click") return;
  if (!start || !api.session || start.ctrl || start.button === 1 || start.button !== event.button) return;
  if (Math.hypot(event.clientX - start.x, event.clientY - start.y) > 4) return; // a drag, not a click
  const at = pointerAt(event);
  if (!at) return;
  const mm = at.mm;
  const positive = event.button === 0 && !event.shiftKey;
  const objectId = viewer.activeObject;
  enqueue(async () => {
    status(`${positive ? "adding" : "removing"} at (${mm.map((v) => v.toFixed(1)).join(", ")}) mm…`);
    const reply = await api.point(mm, positive, objectId);
    await afterAction(reply, positive ? "positive click" : "negative click");
  });
});

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement || !api.session) return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === "z") {
    event.preventDefault();
    history(event.shiftKey ? "redo" : "undo");
  } else if ((event.ctrlKey || event.metaKey) && key === "y") {
    event.preventDefault();
    history("redo");
  } else if (key === "n" && !event.ctrlKey && !event.metaKey) {
    $("new-object").click();
  }
});

// ------------------------------------------------------------------ opening volumes
async function openSession(form) {
  status("opening…");
  const session = await api.open(form);
  const buffer = await api.imageBuffer();
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  await nv.loadFromArrayBuffer(buffer, "image.nii.gz");
  const base = nv.volumes[0];
  const overlay = NVImage.zerosLike(base, "uint8");
  overlay.hdr.intent_code = 1002; // NIFTI_INTENT_LABEL: NiiVue then looks labels up exactly (no interpolation)
  overlay.name = "mask";
  overlay.setColormapLabel(labelLut());
  overlay.opacity = 0.45;
  nv.addVolume(overlay);
  viewer.overlay = overlay;
  nv.setSliceType(SLICE_TYPE.MULTIPLANAR);
  if (base.global_min < -500) {
    $("window").value = 400;
    $("level").value = 40;
    applyWindow();
  } else {
    showWindow();
  }
  viewer.activeObject = 1;
  viewer.objects = [];
  viewer.names = {};
  setEnabled(true);
  await refreshState();
  status(`${session.name}: ${session.shape.join(" × ")} voxels. ${TOOL_HINTS[viewer.tool]}`);
  return session;
}

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  enqueue(() => openSession(form));
  $("upload").value = "";
});

async function listFolder(folder) {
  const listing = await api.files(folder);
  const select = $("root-files");
  select.replaceChildren(new Option("data root…", ""));
  if (listing.folder) {
    const parent = listing.folder.split("/").slice(0, -1).join("/");
    select.append(new Option("⬑ ..", `folder:${parent}`));
    select.append(new Option(`▣ ${listing.folder} (open as DICOM series)`, `image:${listing.folder}`));
  }
  for (const entry of listing.entries) {
    const label = entry.kind === "folder" ? `${entry.path}/` : entry.path;
    select.append(new Option(label, `${entry.kind}:${entry.path}`));
  }
  select.disabled = false;
  $("open-root").disabled = false;
}

function openSelected() {
  const value = $("root-files").value;
  if (!value) return;
  const [kind, ...rest] = value.split(":");
  const path = rest.join(":");
  if (kind === "folder") return enqueue(() => listFolder(path));
  const form = new FormData();
  form.append("path", path);
  return enqueue(() => openSession(form));
}
$("open-root").addEventListener("click", openSelected);
viewer.openPath = (path) => {
  const form = new FormData();
  form.append("path", path);
  return enqueue(() => openSession(form));
};

// Move the three views to voxel (i, j, k) of the session's image (the server's geometry, so
// this holds whatever the file's orientation).
viewer.showVoxel = (ijk) => {
  const { origin_lps: origin, direction, spacing } = api.session;
  const lps = [0, 1, 2].map((r) => origin[r] + [0, 1, 2].reduce((sum, a) => sum + direction[r][a] * spacing[a] * ijk[a], 0));
  const ras = [-lps[0], -lps[1], lps[2]];
  nv.scene.crosshairPos = nv.mm2frac(ras);
  nv.drawScene();
  nv.createOnLocationChange();
};

// ------------------------------------------------------------------ saving
$("save").addEventListener("click", () =>
  enqueue(async () => {
    let reply;
    try {
      reply = await api.save(false);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 409) throw error;
      if (!api.session.from_data_root) return $("download").click();
      if (!window.confirm(`${error.message}. Replace it?`)) return status("not saved");
      reply = await api.save(true);
    }
    status(`saved ${reply.path} (${reply.voxels} voxels)`);
  })
);
$("download").addEventListener("click", () =>
  enqueue(async () => {
    const blob = await api.maskBlob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${api.session.name.split("/").pop().split(".")[0] || "mask"}_seg.nii.gz`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  })
);

// ------------------------------------------------------------------ start
viewer.ready = (async () => {
  await nv.attachToCanvas(canvas);
  nv.setCrosshairWidth(1);
  const info = await api.info();
  viewer.info = info;
  if (info.random_weights) {
    $("banner").textContent = `${info.model} runs with untrained random weights: the masks are meaningless (start the server with --checkpoint).`;
    $("banner").hidden = false;
  }
  if (info.data_root) await listFolder("");
  renderObjects();
})().catch(fail);
