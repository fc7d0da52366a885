// Label placement for the page, the same rule as the rendered PNG's (server/predict/labels.py, whose
// docstring states it): the most crowded point chooses first; candidate boxes on rings around each point;
// the least overlap with placed boxes, then the fewest markers touched, then the nearest; a displaced box
// gets a leader. Here in screen pixels (the editor re-places labels at every zoom).

const FIRST_RING = 1.5;
const ADJACENT = 2.0;

function order(points, sizes, radius) {
  const crowd = points.map((p, i) => points.filter((q, j) => j !== i &&
    Math.hypot(p[0] - q[0], p[1] - q[1]) < sizes[i][0] + sizes[i][1] + 2 * radius).length);
  return points.map((_, i) => i).sort((a, b) => crowd[b] - crowd[a] || a - b);
}

function* candidates([w, h], radius, rings) {
  const step = Math.max(radius, h / 2);
  for (let k = 0; k < rings; k++) {
    const d = FIRST_RING * radius + k * step;
    const n = 8 * Math.max(1, Math.ceil((2 * Math.PI * d) / (8 * step)));
    for (let j = 0; j < n; j++) {
      const theta = -Math.PI / 4 + (2 * Math.PI * j) / n;
      const u = [Math.cos(theta), Math.sin(theta)];
      const m = Math.max(Math.abs(u[0]), Math.abs(u[1]));
      yield [d * u[0] + (u[0] / m) * (w / 2) - w / 2, d * u[1] + (u[1] / m) * (h / 2) - h / 2];
    }
  }
}

function overlap(box, placed, gap) {
  let area = 0;
  for (const o of placed) {
    const sx = Math.min(box[2], o[2]) - Math.max(box[0], o[0]) + gap;
    const sy = Math.min(box[3], o[3]) - Math.max(box[1], o[1]) + gap;
    if (sx > 0 && sy > 0) area += sx * sy;
  }
  return area;
}

function nearest(box, [x, y]) {
  return [Math.min(Math.max(x, box[0]), box[2]), Math.min(Math.max(y, box[1]), box[3])];
}

function touched(box, points, radius) {
  return points.filter((p) => {
    const q = nearest(box, p);
    return Math.hypot(q[0] - p[0], q[1] - p[1]) < radius;
  }).length;
}

// points: [[x, y]], sizes: [[w, h]], area: [width, height], radius: the marker's, all in one pixel frame.
// Answers, in input order, {x, y, w, h, leader: [x, y] | null} (top-left, size, the leader's end on the box).
export function placeLabels(points, sizes, area, radius, { rings = 16, gap = 1 } = {}) {
  const placed = [];
  const out = new Array(points.length);
  for (const i of order(points, sizes, radius)) {
    const [w, h] = sizes[i];
    let best = null;
    for (const [dx, dy] of candidates(sizes[i], radius, rings)) {
      const x = Math.min(Math.max(points[i][0] + dx, 0), Math.max(area[0] - 1 - w, 0));
      const y = Math.min(Math.max(points[i][1] + dy, 0), Math.max(area[1] - 1 - h, 0));
      const box = [x, y, x + w, y + h];
      const q = nearest(box, points[i]);
      const score = [overlap(box, placed, gap), touched(box, points, radius + gap),
        Math.hypot(q[0] - points[i][0], q[1] - points[i][1])];
      if (!best || score[0] < best.score[0] || (score[0] === best.score[0] && (score[1] < best.score[1] ||
        (score[1] === best.score[1] && score[2] < best.score[2])))) best = { box, score };
    }
    placed.push(best.box);
    const end = nearest(best.box, points[i]);
    const far = Math.hypot(end[0] - points[i][0], end[1] - points[i][1]) > ADJACENT * radius;
    out[i] = { x: best.box[0], y: best.box[1], w, h, leader: far ? end : null };
  }
  return out;
}
