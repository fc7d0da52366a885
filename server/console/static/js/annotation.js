// The state of one study's annotation in the editor: the step's points with where each came from, the
// current landmark, an undo history and the keyboard crosshair. No DOM here.

export class AnnotationState {
  // landmarks: [{code, name}] of the step; saved: {code: [x, y]} of the current annotation version or null.
  constructor(landmarks, saved) {
    this.landmarks = landmarks;
    this.points = {}; // code -> {x, y, source: "saved" | "predicted" | "placed"}
    for (const [code, [x, y]] of Object.entries(saved || {})) this.points[code] = { x, y, source: "saved" };
    this.current = 0;
    this.history = [];
    this.dirty = false;
    this.cursor = null; // the keyboard crosshair, image pixels
    this.firstUnplaced();
  }

  get code() {
    return this.landmarks[this.current].code;
  }

  snapshot() {
    this.history.push({ points: structuredClone(this.points), current: this.current, dirty: this.dirty });
    if (this.history.length > 200) this.history.shift();
  }

  undo() {
    const last = this.history.pop();
    if (!last) return false;
    Object.assign(this, last);
    return true;
  }

  // Pre-places the predicted points of landmarks that have none yet; answers how many it placed.
  prefill(predicted) {
    let placed = 0;
    for (const p of predicted) {
      if (this.landmarks.some((l) => l.code === p.code) && !this.points[p.code]) {
        this.points[p.code] = { x: p.x, y: p.y, source: "predicted" };
        placed += 1;
      }
    }
    if (placed) this.firstUnplaced();
    return placed;
  }

  // Places (or moves) the current landmark at an image point, rounded to 0.01 px, then goes to the next
  // landmark that has no point yet.
  place(x, y, code = this.code) {
    this.snapshot();
    this.points[code] = { x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100, source: "placed" };
    this.dirty = true;
    this.cursor = { x, y };
    this.select(code);
    this.advance();
  }

  move(code, x, y) {
    this.points[code] = { x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100, source: "placed" };
    this.dirty = true;
  }

  remove(code = this.code) {
    if (!this.points[code]) return;
    this.snapshot();
    delete this.points[code];
    this.dirty = true;
  }

  select(code) {
    const index = this.landmarks.findIndex((l) => l.code === code);
    if (index >= 0) this.current = index;
    const p = this.points[this.code];
    if (p) this.cursor = { x: p.x, y: p.y };
  }

  step(delta) {
    const n = this.landmarks.length;
    this.select(this.landmarks[(this.current + delta + n) % n].code);
  }

  // The next landmark without a point (after the current one, wrapping); stays if every one has a point.
  advance() {
    const n = this.landmarks.length;
    for (let i = 1; i <= n; i++) {
      const code = this.landmarks[(this.current + i) % n].code;
      if (!this.points[code]) {
        this.select(code);
        return;
      }
    }
  }

  firstUnplaced() {
    const index = this.landmarks.findIndex((l) => !this.points[l.code]);
    this.select(this.landmarks[index >= 0 ? index : 0].code);
  }

  complete() {
    return this.landmarks.every((l) => this.points[l.code]);
  }

  // The API's body points, in the step's order.
  body() {
    return this.landmarks.filter((l) => this.points[l.code]).map((l) => ({
      code: l.code, x: this.points[l.code].x, y: this.points[l.code].y }));
  }
}
