// A canvas image viewer: zoom, pan and window/level over an image at full resolution, and the mapping
// between screen and image coordinates that every click and drawn point goes through.
//
// Coordinates: image pixels with pixel centres at integers (the API's convention: pixel i spans
// [i - 0.5, i + 0.5]); screen coordinates are CSS pixels from the canvas' top-left corner.
// screen = image * scale + (tx, ty), so (tx, ty) is where the centre of pixel (0, 0) is drawn.

export class Viewer {
  constructor(canvas, image, onDraw) {
    this.canvas = canvas;
    this.image = image; // an ImageBitmap or a loaded HTMLImageElement
    this.width = image.width;
    this.height = image.height;
    this.onDraw = onDraw; // (ctx, viewer) => void: the overlay, drawn in screen coordinates
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.window = { level: 127.5, width: 255 }; // of the 8-bit display values
    this.source = document.createElement("canvas"); // the image after window/level, at full resolution
    this.source.width = this.width;
    this.source.height = this.height;
    this.original = null;
    this.applyWindow();
    this.resize();
    this.fit();
  }

  toScreen(x, y) {
    return [x * this.scale + this.tx, y * this.scale + this.ty];
  }

  toImage(sx, sy) {
    return [(sx - this.tx) / this.scale, (sy - this.ty) / this.scale];
  }

  // Whether an image point lies on the image (within half a pixel of the outermost centres).
  inside(x, y) {
    return x >= -0.5 && y >= -0.5 && x <= this.width - 0.5 && y <= this.height - 0.5;
  }

  resize() {
    const box = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssWidth = Math.max(1, box.width);
    this.cssHeight = Math.max(1, box.height);
    this.canvas.width = Math.round(this.cssWidth * dpr);
    this.canvas.height = Math.round(this.cssHeight * dpr);
  }

  fit() {
    this.scale = Math.min(this.cssWidth / this.width, this.cssHeight / this.height);
    this.tx = (this.cssWidth - this.width * this.scale) / 2 + 0.5 * this.scale;
    this.ty = (this.cssHeight - this.height * this.scale) / 2 + 0.5 * this.scale;
    this.draw();
  }

  // Zoom by `factor` keeping the image point under screen (sx, sy) where it is.
  zoomAt(factor, sx = this.cssWidth / 2, sy = this.cssHeight / 2) {
    const [x, y] = this.toImage(sx, sy);
    this.scale = Math.min(64, Math.max(0.02, this.scale * factor));
    this.tx = sx - x * this.scale;
    this.ty = sy - y * this.scale;
    this.draw();
  }

  pan(dx, dy) {
    this.tx += dx;
    this.ty += dy;
    this.draw();
  }

  // Centre the view on an image point (keeps the zoom).
  centreOn(x, y) {
    this.tx = this.cssWidth / 2 - x * this.scale;
    this.ty = this.cssHeight / 2 - y * this.scale;
    this.draw();
  }

  setWindow(level, width) {
    this.window = { level, width: Math.max(1, width) };
    this.applyWindow();
    this.draw();
  }

  // Maps the display values through the window (level +- width/2 -> 0..255) into the source canvas.
  applyWindow() {
    const ctx = this.source.getContext("2d");
    if (!this.original) {
      ctx.drawImage(this.image, 0, 0);
      this.original = ctx.getImageData(0, 0, this.width, this.height);
    }
    const { level, width } = this.window;
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v++) lut[v] = ((v - (level - width / 2)) / width) * 255;
    const out = new ImageData(this.width, this.height);
    const src = this.original.data;
    const dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      const g = lut[src[i]];
      dst[i] = g;
      dst[i + 1] = g;
      dst[i + 2] = g;
      dst[i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, this.cssWidth, this.cssHeight);
    ctx.imageSmoothingEnabled = this.scale < 2;
    // Pixel (0, 0)'s centre is at (tx, ty), so its left edge is half a pixel before.
    ctx.drawImage(this.source, this.tx - 0.5 * this.scale, this.ty - 0.5 * this.scale,
      this.width * this.scale, this.height * this.scale);
    this.canvas.dataset.transform = `${this.scale} ${this.tx} ${this.ty}`;
    if (this.onDraw) this.onDraw(ctx, this);
  }
}
