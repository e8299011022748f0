// Decode tok/s (left scale) and MTP acceptance % (right scale, 0-100) per reply, drawn on a canvas.

export function drawChart(canvas, points) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const css = getComputedStyle(canvas);
  const colour = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
  const pad = { l: 30, r: 30, t: 8, b: 16 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = colour("--muted", "#888");
  g.strokeStyle = colour("--line", "#ccc");
  g.strokeRect(pad.l, pad.t, pw, ph);
  if (!points.length) {
    g.fillText("no replies yet", pad.l + 6, pad.t + 14);
    return;
  }
  const maxSpeed = Math.max(1, ...points.map((p) => p.speed || 0)) * 1.1;
  const x = (i) => pad.l + (points.length === 1 ? pw / 2 : (i * pw) / (points.length - 1));
  g.textAlign = "right";
  g.fillText(maxSpeed.toFixed(0), pad.l - 3, pad.t + 8);
  g.fillText("0", pad.l - 3, pad.t + ph);
  g.textAlign = "left";
  g.fillText("100%", pad.l + pw + 3, pad.t + 8);
  g.fillText("0%", pad.l + pw + 3, pad.t + ph);
  g.fillText(`${points.length} repl${points.length === 1 ? "y" : "ies"}`, pad.l + 2, h - 3);
  const series = [
    [(p) => p.speed, maxSpeed, colour("--speed", "#2a7ae2")],
    [(p) => (p.acceptance == null ? null : p.acceptance * 100), 100, colour("--acc", "#e2852a")],
  ];
  for (const [value, max, stroke] of series) {
    g.strokeStyle = stroke;
    g.fillStyle = stroke;
    g.lineWidth = 1.5;
    g.beginPath();
    let pen = false;
    points.forEach((p, i) => {
      const v = value(p);
      if (v == null) { pen = false; return; }
      const y = pad.t + ph - (Math.min(v, max) / max) * ph;
      if (pen) g.lineTo(x(i), y); else g.moveTo(x(i), y);
      pen = true;
    });
    g.stroke();
    points.forEach((p, i) => {
      const v = value(p);
      if (v != null) g.fillRect(x(i) - 2, pad.t + ph - (Math.min(v, max) / max) * ph - 2, 4, 4);
    });
  }
}
