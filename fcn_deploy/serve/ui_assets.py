"""The browser side of `fcn_deploy.serve.ui`: its style sheet and the two scripts of its page.

The scripts only move bytes and pixels the server produced: ``UPLOAD_JS`` reads the files the
user drops or picks and sends them inside the page's event request (so they never reach Gradio's
upload folder on disk); ``RESULT_JS`` shows a result: the input beside the overlay (the class
colours over the input at the slider's opacity), the class under the cursor (read back from the
palette PNG of the labels, mapped through the legend's colours), and the overlay as shown,
saved as a PNG. Both run as Gradio ``js_on_load`` code (``element``, ``props``, ``trigger`` and
``watch`` are Gradio's).
"""

from __future__ import annotations

__all__ = ["CSS", "OPACITY_JS", "RESULT_JS", "UPLOAD_JS"]

CSS = """
.fcn-facts h2 { margin: 0 0 6px; }
#fcn-facts table, #fcn-result table { border: 0; border-collapse: collapse; font-size: 0.9em;
                                     width: auto; }
#fcn-facts tr, #fcn-result tr { border: 0; }
#fcn-facts th, #fcn-facts td, #fcn-result td { border: 0; border-bottom: 1px solid #e5e7eb;
                                               padding: 2px 14px 2px 0; vertical-align: top; }
.fcn-facts th { text-align: left; font-weight: 600; }
.fcn-drop label { display: block; border: 2px dashed #9ca3af; border-radius: 8px; padding: 18px;
                  text-align: center; cursor: pointer; }
.fcn-drop input[type=file] { display: block; margin: 0 auto 8px; }
.fcn-status { min-height: 1.3em; margin: 4px 0 0; }
.fcn-card { border-top: 1px solid #d1d5db; padding: 10px 0; }
.fcn-card h3 { margin: 4px 0 8px; }
.fcn-pair { display: flex; gap: 12px; flex-wrap: wrap; align-items: flex-start; }
.fcn-pair figure { margin: 0; max-width: 100%; }
.fcn-pair figcaption { font-size: 0.85em; min-height: 1.3em; }
img.fcn-input, .fcn-view img { display: block; max-width: 100%; height: auto; }
.fcn-view { position: relative; display: inline-block; line-height: 0; cursor: crosshair; }
.fcn-view img.fcn-colours { position: absolute; left: 0; top: 0; width: 100%; height: 100%;
                            opacity: var(--fcn-alpha); image-rendering: pixelated; }
.fcn-legend { margin: 8px 0; }
.fcn-legend td.fcn-share { text-align: right; font-variant-numeric: tabular-nums; }
.fcn-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #6b7280;
              vertical-align: middle; }
.fcn-timing, .fcn-downloads { font-size: 0.9em; margin: 4px 0; }
.fcn-downloads a { margin-right: 14px; }
.fcn-error { color: #b91c1c; font-family: monospace; white-space: pre-wrap; margin: 6px 0; }
video.fcn-player { max-width: 100%; display: block; }
.fcn-plot svg { max-width: 100%; height: auto; }
"""

# Gradio's slider → the overlay's opacity, at once and in the page only (no request).
OPACITY_JS = "(a) => { document.documentElement.style.setProperty('--fcn-alpha', a); }"

UPLOAD_JS = r"""
const box = () => element.querySelector('.fcn-drop');
const status = (text) => {
  const line = element.querySelector('.fcn-status');
  if (line) line.textContent = text;
};
const mb = (n) => (n / 1048576).toFixed(1);
const read = (file) => new Promise((done, fail) => {
  const reader = new FileReader();
  const base64 = () => reader.result.slice(reader.result.indexOf(',') + 1);  // after "data:...,"
  reader.onload = () => done({name: file.name, data: base64()});
  reader.onerror = () => fail(reader.error);
  reader.readAsDataURL(file);
});
async function send(list) {
  const files = [...list];
  if (!files.length) return;
  const maxFiles = Number(box().dataset.maxFiles), maxBytes = Number(box().dataset.maxBytes);
  const total = files.reduce((n, f) => n + f.size, 0);
  if (files.length > maxFiles) {
    status(`error: ${files.length} files at once; this page takes up to ${maxFiles}`);
    return;
  }
  if (total > maxBytes) {
    status(`error: ${mb(total)} MB of files at once; this page takes up to ${mb(maxBytes)} MB`);
    return;
  }
  status(`reading ${files.length} file(s) ...`);
  try {
    props.value = JSON.stringify(await Promise.all(files.map(read)));
  } catch (e) {
    status(`error: cannot read the file (${e})`);
    return;
  }
  status(`segmenting ${files.length} file(s) ...`);
  trigger('submit');
}
watch('value', () => { if (!props.value) status(''); });  // the server took the files
element.addEventListener('change', (e) => {
  if (e.target.matches('input[type=file]')) { send(e.target.files); e.target.value = ''; }
});
element.addEventListener('dragover', (e) => e.preventDefault());
element.addEventListener('drop', (e) => { e.preventDefault(); send(e.dataTransfer.files); });
"""

RESULT_JS = r"""
const root = document.documentElement;
const opacity = () => parseFloat(getComputedStyle(root).getPropertyValue('--fcn-alpha'));
// the input is sent once; the overlay's lower layer is the same picture
const prepare = () => element.querySelectorAll('.fcn-card').forEach((card) => {
  const input = card.querySelector('img.fcn-input'), base = card.querySelector('img.fcn-base');
  if (input && base && !base.getAttribute('src')) base.src = input.src;
});
watch('value', prepare);
prepare();
const pixels = (img) => {
  if (!img.fcnPixels) {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const g = canvas.getContext('2d', {willReadFrequently: true});
    g.drawImage(img, 0, 0);
    img.fcnPixels = g.getImageData(0, 0, canvas.width, canvas.height).data;
  }
  return img.fcnPixels;
};
element.addEventListener('mousemove', (e) => {
  const view = e.target.closest('.fcn-view');
  if (!view) return;
  const layer = view.querySelector('img.fcn-colours'), box = layer.getBoundingClientRect();
  const w = layer.naturalWidth, h = layer.naturalHeight;
  const x = Math.floor((e.clientX - box.left) * w / box.width);
  const y = Math.floor((e.clientY - box.top) * h / box.height);
  if (!(x >= 0 && y >= 0 && x < w && y < h)) return;
  const d = pixels(layer), i = 4 * (y * w + x);
  const hit = JSON.parse(view.dataset.classes)[`${d[i]},${d[i + 1]},${d[i + 2]}`];
  view.closest('.fcn-card').querySelector('.fcn-hover').textContent =
    hit ? `${hit[1]} (class ${hit[0]}) at x=${x}, y=${y}` : `x=${x}, y=${y}`;
});
element.addEventListener('click', (e) => {
  const link = e.target.closest('a.fcn-save-overlay');
  if (!link) return;
  e.preventDefault();
  const card = link.closest('.fcn-card');
  const input = card.querySelector('img.fcn-input'), layer = card.querySelector('img.fcn-colours');
  const canvas = document.createElement('canvas');
  canvas.width = layer.naturalWidth; canvas.height = layer.naturalHeight;
  const g = canvas.getContext('2d');
  g.drawImage(input, 0, 0);
  g.globalAlpha = opacity();
  g.drawImage(layer, 0, 0);
  canvas.toBlob((blob) => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = link.getAttribute('download');
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
  }, 'image/png');
});
"""
