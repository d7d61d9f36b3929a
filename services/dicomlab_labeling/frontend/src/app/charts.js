// The admin page's charts, drawn with Chart.js (bundled by Vite). Every chart repeats numbers that
// the page also gives as text (tables, labelled values), so nothing is told by colour alone.
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip } from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip);

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const BASE = { responsive: true, maintainAspectRatio: false, animation: false };

/** Landis & Koch bands drawn behind the kappa/alpha bars: [from, to, name, fill]. */
export const KAPPA_BANDS = [
  [-1, 0, 'poor', 'rgba(214, 39, 40, 0.12)'],
  [0, 0.2, 'slight', 'rgba(255, 127, 14, 0.12)'],
  [0.2, 0.4, 'fair', 'rgba(255, 187, 120, 0.14)'],
  [0.4, 0.6, 'moderate', 'rgba(188, 189, 34, 0.12)'],
  [0.6, 0.8, 'substantial', 'rgba(44, 160, 44, 0.12)'],
  [0.8, 1, 'almost perfect', 'rgba(23, 190, 207, 0.14)'],
];

const bands = {
  id: 'dlBands',
  beforeDatasetsDraw(chart) {
    const { ctx, chartArea, scales } = chart;
    const y = scales.y;
    ctx.save();
    ctx.font = '11px system-ui, sans-serif';
    for (const [from, to, name, fill] of KAPPA_BANDS) {
      const top = y.getPixelForValue(Math.min(to, y.max));
      const bottom = y.getPixelForValue(Math.max(from, y.min));
      if (bottom <= top) continue;
      ctx.fillStyle = fill;
      ctx.fillRect(chartArea.left, top, chartArea.right - chartArea.left, bottom - top);
      ctx.fillStyle = '#555';
      ctx.fillText(name, chartArea.right - ctx.measureText(name).width - 4, top + 12);
    }
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = '#333';
    for (const line of [0.667, 0.8]) {
      const at = y.getPixelForValue(line);
      ctx.beginPath();
      ctx.moveTo(chartArea.left, at);
      ctx.lineTo(chartArea.right, at);
      ctx.stroke();
    }
    ctx.restore();
  },
};

/** Progress per job: % of images complete and % of answers given. */
export function progressChart(canvas, jobs) {
  const pct = (a, b) => (b > 0 ? Math.round((1000 * a) / b) / 10 : 0);
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels: jobs.map((j) => j.name),
      datasets: [
        { label: 'Images complete (%)', data: jobs.map((j) => pct(j.counts.complete, j.counts.images)), backgroundColor: PALETTE[0] },
        { label: 'Answers given (%)', data: jobs.map((j) => pct(j.counts.answers, j.counts.needed)), backgroundColor: PALETTE[1] },
      ],
    },
    options: { ...BASE, indexAxis: 'y', scales: { x: { min: 0, max: 100, title: { display: true, text: '%' } } } },
  });
}

/** Fleiss' kappa and Krippendorff's alpha per finding over the interpretation bands. */
export function agreementChart(canvas, findings) {
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels: findings.map(([label]) => label),
      datasets: [
        { label: "Fleiss' κ", data: findings.map(([, a]) => a.fleissKappa), backgroundColor: PALETTE[0] },
        { label: "Krippendorff's α", data: findings.map(([, a]) => a.krippendorffAlpha), backgroundColor: PALETTE[4] },
      ],
    },
    options: { ...BASE, scales: { y: { min: Math.min(0, ...findings.flatMap(([, a]) => [a.fleissKappa ?? 0, a.krippendorffAlpha ?? 0]).map((v) => Math.floor(v * 5) / 5)), max: 1 } } },
    plugins: [bands],
  });
}

/** Images answered per reader per day (one bar series per reader). */
export function perDayChart(canvas, perDay) {
  const days = [...new Set(Object.values(perDay).flatMap((d) => Object.keys(d)))].sort();
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels: days,
      datasets: Object.entries(perDay).map(([reader, counts], i) => ({
        label: reader,
        data: days.map((d) => counts[d] ?? 0),
        backgroundColor: PALETTE[i % PALETTE.length],
      })),
    },
    options: { ...BASE, scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: 'images' } } } },
  });
}

/** Equal-width bins over [0, max] (at most 12): {labels, counts}. */
export function histogram(values, maxBins = 12) {
  if (!values.length) return { labels: [], counts: [] };
  const top = Math.max(...values);
  const bins = Math.max(1, Math.min(maxBins, Math.ceil(Math.sqrt(values.length))));
  const width = top > 0 ? top / bins : 1;
  const counts = new Array(bins).fill(0);
  for (const v of values) counts[Math.min(bins - 1, Math.floor(v / width))] += 1;
  const labels = counts.map((_, i) => `${Math.round(i * width)}–${Math.round((i + 1) * width)} s`);
  return { labels, counts };
}

/** Histogram of seconds spent per image. */
export function histogramChart(canvas, seconds) {
  const { labels, counts } = histogram(seconds);
  return new Chart(canvas, {
    type: 'bar',
    data: { labels, datasets: [{ label: 'Images', data: counts, backgroundColor: PALETTE[2], barPercentage: 1, categoryPercentage: 1 }] },
    options: { ...BASE, scales: { y: { beginAtZero: true, ticks: { precision: 0 } }, x: { title: { display: true, text: 'seconds per image' } } } },
  });
}

/** A share 0..1 as "83 %" (the text drawn in a matrix cell), "—" when there is none. */
export function shareText(v) {
  return typeof v === 'number' && Number.isFinite(v) ? `${Math.round(v * 100)} %` : '—';
}

/** Cell fill for a share 0..1: one hue, lighter = less agreement (grey: no answer). The text repeats it. */
export function shareFill(v) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '#e6e6e6';
  const t = Math.max(0, Math.min(1, v));
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(237, 0)}, ${mix(248, 90)}, ${mix(233, 50)})`; // #edf8e9 → #005a32
}

/** The text colour that reads on shareFill(v). */
function inkOn(v) {
  return typeof v === 'number' && v >= 0.55 ? '#fff' : '#111';
}

// Draws each cell's value as text, so the matrix never relies on colour alone.
const cellText = {
  id: 'dlCellText',
  afterDatasetsDraw(chart) {
    const { ctx } = chart;
    ctx.save();
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    chart.data.datasets.forEach((dataset, i) => {
      chart.getDatasetMeta(i).data.forEach((bar, j) => {
        const v = dataset.shares[j];
        const text = shareText(v);
        const width = bar.width ?? 0;
        const size = Math.max(9, Math.min(13, Math.floor(width / 4)));
        ctx.font = `${size}px system-ui, sans-serif`;
        const shown = ctx.measureText(text).width <= width - 4 ? text : text.replace(' %', '');
        ctx.fillStyle = inkOn(v);
        ctx.fillText(shown, bar.x, (bar.y + bar.base) / 2);
      });
    });
    ctx.restore();
  },
};

/**
 * The reader-versus-consensus agreement matrix: one row per reader, one column per finding, each
 * cell the share of that reader's answers equal to the consensus (value as text, shade repeating it).
 * Drawn as stacked unit bars (one stack per finding, one segment per reader), so only Chart.js's
 * bar controller is needed. `shares[reader][label]` is a number 0..1 or null.
 */
export function matrixChart(canvas, readers, labels, shares) {
  const value = (r, l) => shares?.[r]?.[l] ?? null;
  return new Chart(canvas, {
    type: 'bar',
    data: {
      labels,
      datasets: readers.map((reader) => ({
        label: reader,
        data: labels.map(() => 1),
        shares: labels.map((l) => value(reader, l)),
        backgroundColor: labels.map((l) => shareFill(value(reader, l))),
        borderColor: '#fff',
        borderWidth: 1,
        barPercentage: 1,
        categoryPercentage: 1,
      })),
    },
    options: {
      ...BASE,
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (items) => items[0]?.label ?? '',
            label: (item) => `${item.dataset.label}: ${shareText(item.dataset.shares[item.dataIndex])} agree with the consensus`,
          },
        },
      },
      scales: {
        x: { stacked: true, grid: { display: false }, ticks: { autoSkip: false, maxRotation: 45 } },
        y: {
          stacked: true,
          reverse: true, // first reader on top, as in the table
          min: 0,
          max: Math.max(1, readers.length),
          grid: { display: false },
          afterBuildTicks: (axis) => {
            axis.ticks = readers.map((_, i) => ({ value: i + 0.5 }));
          },
          ticks: { autoSkip: false, callback: (v) => readers[Math.floor(v)] ?? '' },
        },
      },
    },
    plugins: [cellText],
  });
}
