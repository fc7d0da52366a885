// The annotation editor: the study at full resolution (zoom, pan, window/level), the step's landmarks to
// place by click, drag or keyboard, assisted by the active version's predictions, saved as a new version.

import { api, apiBlob, predictStudy } from "../api.js";
import { AnnotationState } from "../annotation.js";
import { busy, fmt, h, replace, showProblem } from "../dom.js";
import { placeLabels } from "../labels.js";
import { Viewer } from "../viewer.js";
import { allStudies, annotationsByStudy } from "./step.js";

const COLOURS = { saved: "#4ade80", placed: "#facc15", predicted: "#f472b6", context: "#38bdf8" };
const HIT_PX = 9; // a press this close to a point (screen px) grabs it
const KEYS_HELP = "Click: place · drag: move · wheel: zoom · drag the image: pan · arrows: move the crosshair " +
  "(Shift: 1 px) · Enter: place at the crosshair · Tab / Shift+Tab: next / previous landmark · Delete: remove · " +
  "z: undo · s: save · ] / [: next / previous study · + / - / 0: zoom in / out / fit";

const MARKER_PX = 5;
const MAX_SECONDS = 86400; // the API's bound on an annotation's recorded time
const FONT = "12px system-ui, sans-serif";

function drawMarker(ctx, [sx, sy], colour, { current = false, hollow = false } = {}) {
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = current ? 3 : 2;
  ctx.beginPath();
  ctx.arc(sx, sy, current ? MARKER_PX + 2 : MARKER_PX, 0, 2 * Math.PI);
  if (hollow) ctx.setLineDash([3, 2]);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillRect(sx - 1, sy - 1, 2, 2);
}

// marks: [{at: [sx, sy], label, colour}] -> labels placed apart (labels.js), with leaders when displaced.
function drawLabels(ctx, marks, area) {
  ctx.font = FONT;
  const sizes = marks.map((m) => [ctx.measureText(m.label).width + 4, 15]);
  const boxes = placeLabels(marks.map((m) => m.at), sizes, area, MARKER_PX + 2);
  ctx.textBaseline = "top";
  marks.forEach((m, i) => {
    const b = boxes[i];
    if (b.leader) {
      ctx.strokeStyle = m.colour;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(...m.at);
      ctx.lineTo(...b.leader);
      ctx.stroke();
    }
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#000";
    ctx.strokeText(m.label, b.x + 2, b.y + 1);
    ctx.fillStyle = m.colour;
    ctx.fillText(m.label, b.x + 2, b.y + 1);
  });
}

function drawCrosshair(ctx, viewer, cursor) {
  if (!cursor) return;
  const [sx, sy] = viewer.toScreen(cursor.x, cursor.y);
  ctx.strokeStyle = "rgba(255,255,255,0.8)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(sx - 14, sy);
  ctx.lineTo(sx - 4, sy);
  ctx.moveTo(sx + 4, sy);
  ctx.lineTo(sx + 14, sy);
  ctx.moveTo(sx, sy - 14);
  ctx.lineTo(sx, sy - 4);
  ctx.moveTo(sx, sy + 4);
  ctx.lineTo(sx, sy + 14);
  ctx.stroke();
}

class Editor {
  constructor(ctx) {
    Object.assign(this, ctx); // project, set, study, image, state, context, neighbours, root
    this.opened = performance.now();
    this.canvas = h("canvas", { id: "image", tabindex: 0, "aria-label": "study image" });
    this.list = h("ol", { class: "landmarks", id: "landmark-list" });
    this.status = h("p", { class: "small", id: "editor-status", role: "status" });
    this.history = h("div", { class: "small", id: "annotation-history" });
  }

  mount() {
    this.viewer = new Viewer(this.canvas, this.image, (ctx, v) => this.overlay(ctx, v));
    this.bindPointer();
    this.onKey = (e) => this.key(e);
    document.addEventListener("keydown", this.onKey);
    this.onResize = () => { this.viewer.resize(); this.viewer.draw(); };
    window.addEventListener("resize", this.onResize);
    this.refresh();
    this.canvas.focus();
    return () => {
      document.removeEventListener("keydown", this.onKey);
      window.removeEventListener("resize", this.onResize);
    };
  }

  overlay(ctx, viewer) {
    const marks = [];
    for (const p of this.context) {
      const at = viewer.toScreen(p.x, p.y);
      drawMarker(ctx, at, COLOURS.context, { hollow: true });
      marks.push({ at, label: p.code, colour: COLOURS.context });
    }
    this.set.landmarks.forEach((l, i) => {
      const p = this.state.points[l.code];
      if (!p) return;
      const at = viewer.toScreen(p.x, p.y);
      drawMarker(ctx, at, COLOURS[p.source], { current: i === this.state.current, hollow: p.source === "predicted" });
      marks.push({ at, label: l.code, colour: COLOURS[p.source] });
    });
    const onScreen = ({ at: [x, y] }) => x >= 0 && y >= 0 && x <= viewer.cssWidth && y <= viewer.cssHeight;
    drawLabels(ctx, marks.filter(onScreen), [viewer.cssWidth, viewer.cssHeight]);
    drawCrosshair(ctx, viewer, this.state.cursor);
  }

  refresh() {
    this.viewer.draw();
    replace(this.list, this.set.landmarks.map((l, i) => {
      const p = this.state.points[l.code];
      return h("li", { class: i === this.state.current ? "current" : "", dataset: { code: l.code },
        onclick: () => { this.state.select(l.code); this.refresh(); } },
      h("span", { class: "code" }, l.code), ` ${l.name} `,
      h("span", { class: `src ${p ? p.source : "missing"}` }, p ? `${p.source} ${p.x.toFixed(1)}, ${p.y.toFixed(1)}` : "—"));
    }));
    const placed = this.set.landmarks.filter((l) => this.state.points[l.code]).length;
    replace(this.status, `${placed} of ${this.set.landmarks.length} placed`, this.state.dirty ? " · unsaved" : "",
      ` · current: ${this.state.code}`);
  }

  hit(sx, sy) {
    for (const l of this.set.landmarks) {
      const p = this.state.points[l.code];
      if (!p) continue;
      const [px, py] = this.viewer.toScreen(p.x, p.y);
      if (Math.hypot(px - sx, py - sy) <= HIT_PX) return l.code;
    }
    return null;
  }

  bindPointer() {
    const local = (e) => {
      const box = this.canvas.getBoundingClientRect();
      return [e.clientX - box.left, e.clientY - box.top];
    };
    let press = null;
    this.canvas.addEventListener("pointerdown", (e) => {
      const [sx, sy] = local(e);
      const code = this.hit(sx, sy);
      if (code) this.state.snapshot();
      press = { sx, sy, code, moved: false };
      this.canvas.setPointerCapture(e.pointerId);
    });
    this.canvas.addEventListener("pointermove", (e) => {
      if (!press) return;
      const [sx, sy] = local(e);
      if (Math.hypot(sx - press.sx, sy - press.sy) > 3) press.moved = true;
      if (!press.moved) return;
      if (press.code) {
        const [x, y] = this.viewer.toImage(sx, sy);
        if (this.viewer.inside(x, y)) this.state.move(press.code, x, y);
        this.refresh();
      } else {
        this.viewer.pan(e.movementX, e.movementY);
      }
    });
    this.canvas.addEventListener("pointerup", (e) => {
      const [sx, sy] = local(e);
      if (press && !press.moved) this.clickAt(sx, sy, press.code);
      else if (press?.code) this.state.select(press.code);
      press = null;
      this.refresh();
    });
    this.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [sx, sy] = local(e);
      this.viewer.zoomAt(e.deltaY < 0 ? 1.25 : 0.8, sx, sy);
    }, { passive: false });
  }

  clickAt(sx, sy, grabbed) {
    if (grabbed) {
      this.state.history.pop(); // a click on a point selects it; nothing moved
      this.state.select(grabbed);
      return;
    }
    const [x, y] = this.viewer.toImage(sx, sy);
    if (this.viewer.inside(x, y)) this.state.place(x, y);
  }

  key(e) {
    if (e.target.matches("input, textarea, select")) return;
    const s = this.state;
    const step = e.shiftKey ? 1 : Math.max(1, Math.round(10 / this.viewer.scale));
    const arrows = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    let handled = true;
    if (arrows[e.key]) {
      const c = s.cursor || { x: this.viewer.width / 2, y: this.viewer.height / 2 };
      const x = Math.min(this.viewer.width - 0.5, Math.max(-0.5, c.x + arrows[e.key][0]));
      const y = Math.min(this.viewer.height - 0.5, Math.max(-0.5, c.y + arrows[e.key][1]));
      s.cursor = { x, y };
    } else if (e.key === "Enter") {
      const c = s.cursor || { x: this.viewer.width / 2, y: this.viewer.height / 2 };
      s.place(c.x, c.y);
    } else if (e.key === "Tab") s.step(e.shiftKey ? -1 : 1);
    else if (e.key === "Delete" || e.key === "Backspace") s.remove();
    else if (e.key === "z" || (e.key === "Z" && (e.ctrlKey || e.metaKey))) s.undo();
    else if (e.key === "s") this.save().catch(showProblem);
    else if (e.key === "]") this.go(1);
    else if (e.key === "[") this.go(-1);
    else if (e.key === "+" || e.key === "=") this.viewer.zoomAt(1.25);
    else if (e.key === "-") this.viewer.zoomAt(0.8);
    else if (e.key === "0") this.viewer.fit();
    else handled = false;
    if (!handled) return;
    e.preventDefault();
    if (s.cursor && !e.key.startsWith("Arrow") && e.key !== "Enter") this.follow();
    this.refresh();
  }

  // Keeps the crosshair on screen after the keyboard moved the selection.
  follow() {
    const [sx, sy] = this.viewer.toScreen(this.state.cursor.x, this.state.cursor.y);
    if (sx < 0 || sy < 0 || sx > this.viewer.cssWidth || sy > this.viewer.cssHeight) {
      this.viewer.centreOn(this.state.cursor.x, this.state.cursor.y);
    }
  }

  async save() {
    if (!this.state.body().length) {
      showProblem(new Error("place at least one landmark before saving"));
      return;
    }
    const elapsed = Math.round((performance.now() - this.opened) / 100) / 10;
    // A study left open past a day was not worked on all that time, and the API takes at most a day: unknown.
    const seconds = elapsed <= MAX_SECONDS ? elapsed : null;
    const saved = await api(`/v1/projects/${this.project.id}/landmark-sets/${this.set.step}/annotations`, {
      method: "POST", json: { study_id: this.study.id, points: this.state.body(), seconds } });
    for (const p of Object.values(this.state.points)) p.source = "saved";
    this.state.dirty = false;
    this.opened = performance.now();
    replace(this.status, `saved as version ${saved.version} (${saved.split}) in ${fmt.seconds(elapsed)}`);
    this.root.dataset.saved = String(saved.version);
    await this.showHistory();
  }

  go(delta) {
    if (this.state.dirty) {
      showProblem(new Error("this study has unsaved changes: save them (s) or undo them (z) first"));
      return;
    }
    const i = this.neighbours.indexOf(this.study.id);
    const next = this.neighbours[i + delta];
    if (next) location.hash = `#/projects/${this.project.id}/steps/${this.set.step}/studies/${next}`;
  }

  async showHistory() {
    let versions = [];
    try {
      versions = await api(`/v1/projects/${this.project.id}/landmark-sets/${this.set.step}/annotations/${this.study.id}`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    replace(this.history, versions.length ? h("ul", {}, versions.map((v) => h("li", {},
      `v${v.version} · ${v.annotator} · ${fmt.when(v.created_at)} · ${v.points.length} points`,
      v.seconds !== null ? ` · ${fmt.seconds(v.seconds)}` : ""))) : "not annotated yet");
    return versions;
  }
}

async function decodeImage(blob) {
  return createImageBitmap(blob);
}

// The active version's prediction on this study, or null when there is none yet.
async function assist(project, study, blob) {
  try {
    return await predictStudy(project.id, study, blob);
  } catch (error) {
    if (error.status === 409) return null; // no active version yet
    throw error;
  }
}

function controls(editor, assisted) {
  const level = h("input", { type: "range", min: 0, max: 255, value: 128, id: "wl-level", "aria-label": "level" });
  const width = h("input", { type: "range", min: 1, max: 255, value: 255, id: "wl-width", "aria-label": "window" });
  const onWindow = () => editor.viewer.setWindow(Number(level.value), Number(width.value));
  level.addEventListener("input", onWindow);
  width.addEventListener("input", onWindow);
  const save = h("button", { id: "save", onclick: (e) => busy(e.target, () => editor.save()) }, "Save (s)");
  return h("div", { class: "tools" }, save,
    h("button", { onclick: () => { editor.state.undo(); editor.refresh(); } }, "Undo (z)"),
    h("button", { id: "zoom-in", onclick: () => editor.viewer.zoomAt(1.25) }, "+"),
    h("button", { id: "zoom-out", onclick: () => editor.viewer.zoomAt(0.8) }, "−"),
    h("button", { id: "zoom-fit", onclick: () => editor.viewer.fit() }, "Fit"),
    h("label", {}, "Level ", level), h("label", {}, "Window ", width),
    h("button", { onclick: () => editor.go(-1) }, "◀ Previous ([)"),
    h("button", { id: "next-study", onclick: () => editor.go(1) }, "Next (]) ▶"),
    h("span", { class: "small muted", id: "assist-state" }, assisted));
}

export async function editorView(main, projectId, stepText, studyId) {
  const step = Number(stepText);
  const [project, sets, study] = await Promise.all([api(`/v1/projects/${projectId}`),
    api(`/v1/projects/${projectId}/landmark-sets`), api(`/v1/studies/${studyId}`)]);
  const set = sets.find((s) => s.step === step);
  if (!set) throw new Error(`this project has no step ${step}`);
  const [blob, studies, byStudy] = await Promise.all([apiBlob(`/v1/studies/${studyId}/image`), allStudies(),
    annotationsByStudy(projectId, sets)]);
  const neighbours = studies.filter((s) => byStudy[s.id]?.[step] || !byStudy[s.id]).map((s) => s.id);
  const current = byStudy[studyId]?.[step];
  const saved = current ? Object.fromEntries(current.points.map((p) => [p.code, [p.x, p.y]])) : null;
  const state = new AnnotationState(set.landmarks, saved);
  const [image, prediction] = await Promise.all([decodeImage(blob), assist(project, study, blob)]);
  const codes = new Set(set.landmarks.map((l) => l.code));
  const context = prediction ? prediction.landmarks.filter((l) => !codes.has(l.code)) : [];
  const prefilled = prediction ? state.prefill(prediction.landmarks) : 0;
  const assisted = prediction
    ? `assisted by version ${prediction.model_version_number}: ${prefilled} pre-placed, ${context.length} shown for context`
    : "no active version: place every landmark";
  const root = h("section", { class: "editor", id: "editor", dataset: { study: studyId, step } });
  const editor = new Editor({ project, set, study, image, state, context, neighbours, root });
  replace(root, h("div", { class: "canvas-wrap" }, editor.canvas),
    h("aside", {}, h("nav", { class: "crumbs" }, h("a", { href: `#/projects/${projectId}` }, project.name), " / ",
      h("a", { href: `#/projects/${projectId}/steps/${step}` }, `step ${step}`), ` / study ${studyId.slice(0, 8)}`),
    h("p", { class: "small muted" }, `${study.width}×${study.height} px`,
      study.spacing.x_mm ? ` · ${study.spacing.x_mm} mm/px (${study.spacing.source})` : " · spacing unknown",
      current ? ` · ${current.split}` : ""),
    controls(editor, assisted), editor.status, editor.list,
    h("h3", {}, "History"), editor.history, h("p", { class: "small muted" }, KEYS_HELP)));
  replace(main, root);
  const leave = editor.mount();
  await editor.showHistory();
  return leave;
}
