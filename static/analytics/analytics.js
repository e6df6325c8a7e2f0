/*
 * The analytics page. The server puts every dataset in the page (json_script "analytics-data":
 * name -> {title, columns, rows, chart}), the same rows its CSV downloads hold; this module draws
 * each card of the template from them: summary tiles, a chart (Chart.js, vendored as
 * static/vendor/chartjs/, which sets window.Chart) with a "Table" view of exactly the dataset's
 * columns and rows, a table, the weekday × hour heatmap. Text from the data is only ever set as
 * text, never as HTML.
 */

const Chart = window.Chart;
const root = document.getElementById("analytics-root");
const DATA = JSON.parse(document.getElementById("analytics-data")?.textContent || "{}");
const GRAIN = root?.dataset.grain || "day";
const REDUCED_MOTION = window.matchMedia?.("(prefers-reduced-motion: reduce)").matches;

const COLORS = {
  brand: "#1f5fbf",
  teal: "#0f8b8d",
  amber: "#b06000",
  muted: "#5f6b7a",
  grid: "#e6e9ee",
  bars: "rgba(95, 107, 122, 0.22)",
  scores: ["#c5221f", "#e8710a", "#d9a400", "#7cb342", "#1e8e3e"],
  series: ["#1f5fbf", "#0f8b8d", "#8e44ad", "#e8710a", "#5f6b7a"],
};
const DAY_MS = 24 * 60 * 60 * 1000;
const PERIOD_MS = { day: DAY_MS, week: 7 * DAY_MS, month: 30.44 * DAY_MS };

// --- numbers, times and dates as a person reads them -----------------------------------------
const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

function formatNumber(value) {
  return value == null ? "—" : numberFormat.format(value);
}

function formatPercent(value) {
  return value == null ? "—" : `${numberFormat.format(value)} %`;
}

/** 3.6 s, 11 min 38 s, 2 h 5 min, 3 d 4 h. */
function formatSeconds(value) {
  if (value == null) return "—";
  if (value < 60) return `${numberFormat.format(value)} s`;
  const total = Math.round(value);
  const minutes = Math.floor(total / 60);
  const seconds = total % 60;
  if (minutes < 60) return seconds ? `${minutes} min ${seconds} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** 287 ms; 1.2 s from a second up. */
function formatMs(value) {
  if (value == null) return "—";
  return value < 1000 ? `${Math.round(value)} ms` : formatSeconds(value / 1000);
}

// Periods are the first day of a day, week (Monday) or month, as ISO dates; in UTC like the server.
function periodDate(iso) {
  return new Date(`${iso}T00:00:00Z`);
}

const dateFormats = {
  short: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" }),
  long: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" }),
  weekday: new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
  }),
  month: new Intl.DateTimeFormat(undefined, { month: "short", year: "numeric", timeZone: "UTC" }),
  monthLong: new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric", timeZone: "UTC" }),
  moment: new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit",
  }),
};

/** A period for an axis: "7 Sep", or "Sep 2026" by month. */
function periodShort(iso) {
  if (!iso) return "";
  return (GRAIN === "month" ? dateFormats.month : dateFormats.short).format(periodDate(iso));
}

/** A period in full: "Mon, 7 Sep 2026", "Week of 7 Sep 2026", "September 2026". */
function periodLong(iso) {
  if (!iso) return "";
  const date = periodDate(iso);
  if (GRAIN === "month") return dateFormats.monthLong.format(date);
  if (GRAIN === "week") return `Week of ${dateFormats.long.format(date)}`;
  return dateFormats.weekday.format(date);
}

function formatMoment(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateFormats.moment.format(date);
}

// --- the DOM ------------------------------------------------------------------------------------
function make(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text != null) el.textContent = text;
  return el;
}

let uniqueCounter = 0;
function uniqueId(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

function column(dataset, name) {
  return dataset.columns.indexOf(name);
}

function values(dataset, name) {
  const index = column(dataset, name);
  return dataset.rows.map((row) => (index < 0 ? null : row[index]));
}

/** Columns whose every value is a number (or missing): drawn right-aligned. */
function numericColumns(dataset) {
  return dataset.columns.map((_, i) => dataset.rows.every((row) => row[i] == null || typeof row[i] === "number"));
}

/** What a table cell shows: numbers grouped and with their unit (%, a duration), dates in
 * words, a missing value as a dash. */
function cellText(value, columnName) {
  if (value == null || value === "") return "—";
  if (typeof value === "number") {
    if (/%$/.test(columnName)) return formatPercent(value);
    if (/ ms$/.test(columnName)) return formatMs(value);
    if (/ s$/.test(columnName)) return formatSeconds(value);
    return formatNumber(value);
  }
  if (columnName === "period") return periodLong(value);
  if (/ at$/.test(columnName)) return formatMoment(value);
  return String(value);
}

/**
 * A table of exactly the dataset's columns and rows. Each cell keeps the value the CSV holds in
 * `data-value` ("" for none); it shows it as a person reads it.
 */
function dataTable(dataset, { decorate = null, stack = false } = {}) {
  const box = make("div", stack ? "table-box table-box--stack" : "table-box");
  box.setAttribute("role", "region");
  box.setAttribute("aria-label", dataset.title);
  box.tabIndex = 0; // a region that scrolls sideways on a phone must be reachable by keyboard
  const table = make("table", stack ? "data data--stack" : "data");
  table.append(make("caption", "visually-hidden", dataset.title));
  const numeric = numericColumns(dataset);
  const headRow = make("tr");
  dataset.columns.forEach((name, i) => {
    const th = make("th", numeric[i] ? "num" : "", name);
    th.scope = "col";
    headRow.append(th);
  });
  const thead = make("thead");
  thead.append(headRow);
  const tbody = make("tbody");
  for (const row of dataset.rows) {
    const tr = make("tr");
    row.forEach((value, i) => {
      const name = dataset.columns[i];
      const cell = make(i === 0 ? "th" : "td", numeric[i] ? "num" : "");
      if (i === 0) cell.scope = "row";
      cell.dataset.value = value == null ? "" : String(value);
      cell.dataset.label = name; // the column's name beside the value, where rows stack (phones)
      if (typeof value === "string" && / at$/.test(name)) {
        const time = make("time", null, cellText(value, name));
        time.dateTime = value;
        cell.append(time);
      } else {
        cell.textContent = cellText(value, name);
      }
      if (decorate) decorate(cell, name, value, row);
      tr.append(cell);
    });
    tbody.append(tr);
  }
  table.append(thead, tbody);
  if (stack) keepTableRoles(table);
  box.append(table);
  return box;
}

/** A table that CSS lays out as blocks (rows stacked on a phone) keeps its table semantics. */
function keepTableRoles(table) {
  table.setAttribute("role", "table");
  for (const group of table.querySelectorAll("thead, tbody")) group.setAttribute("role", "rowgroup");
  for (const row of table.querySelectorAll("tr")) row.setAttribute("role", "row");
  for (const th of table.querySelectorAll("thead th")) th.setAttribute("role", "columnheader");
  for (const th of table.querySelectorAll("tbody th")) th.setAttribute("role", "rowheader");
  for (const td of table.querySelectorAll("td")) td.setAttribute("role", "cell");
}

function emptyState(text) {
  const el = make("p", "empty", text || "No data in this period.");
  el.setAttribute("role", "status");
  return el;
}

/** Adds the "Table" toggle to a card: pressed, the table shows in place of the chart. */
function addTableToggle(card, chartBox, tableBox) {
  tableBox.id = uniqueId("table");
  tableBox.hidden = true;
  const button = make("button", "toggle", "Table");
  button.type = "button";
  button.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-controls", tableBox.id);
  button.title = "Show the figures as a table";
  button.addEventListener("click", () => {
    const showTable = button.getAttribute("aria-pressed") !== "true";
    button.setAttribute("aria-pressed", String(showTable));
    chartBox.hidden = showTable;
    tableBox.hidden = !showTable;
  });
  const tools = card.querySelector(".card__tools") || card.querySelector(".card__head");
  tools.prepend(button);
}

// --- charts -------------------------------------------------------------------------------------
/**
 * Vertical dashed lines where the serving variant was switched (the rollback toggles), with the
 * variant switched to. `options.marks`: [{position: fractional index on the x axis, label}].
 */
const switchMarkers = {
  id: "switchMarkers",
  afterDatasetsDraw(chart, _args, options) {
    const marks = options?.marks || [];
    const x = chart.scales.x;
    if (!marks.length || !x) return;
    const { ctx, chartArea: area } = chart;
    ctx.save();
    ctx.font = `600 11px ${Chart.defaults.font.family}`;
    ctx.textBaseline = "top";
    const placed = []; // labels drawn: {left, right, line}; a label that would overlap goes lower
    for (const mark of marks) {
      const px = x.getPixelForValue(mark.position);
      if (!Number.isFinite(px) || px < area.left - 1 || px > area.right + 1) continue;
      ctx.strokeStyle = options.color || COLORS.amber;
      ctx.lineWidth = 1.5;
      ctx.setLineDash([5, 4]);
      ctx.beginPath();
      ctx.moveTo(px, area.top);
      ctx.lineTo(px, area.bottom);
      ctx.stroke();
      ctx.setLineDash([]);
      const width = ctx.measureText(mark.label).width;
      const left = px + 4 + width > area.right ? px - 4 - width : px + 4;
      let line = 0;
      while (placed.some((box) => box.line === line && left < box.right + 6 && left + width > box.left - 6)) line += 1;
      placed.push({ left, right: left + width, line });
      const top = area.top + 2 + line * 16;
      ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
      ctx.fillRect(left - 2, top, width + 4, 14);
      ctx.fillStyle = options.color || COLORS.amber;
      ctx.fillText(mark.label, left, top + 1);
    }
    ctx.restore();
  },
};

/**
 * Where each switch of the serving variant falls on an axis of periods (ISO dates, each the start
 * of its period). The time charts draw each period as a band centred on its index (the axis'
 * `offset`), from i - 0.5 to i + 0.5: a switch a quarter into period i is at i - 0.25.
 */
function switchMarks(periods) {
  const changes = DATA.variant_changes;
  if (!changes || !changes.rows.length || !periods.length) return [];
  const at = column(changes, "changed at");
  const to = column(changes, "to");
  const summary = column(changes, "change");
  const starts = periods.map((iso) => periodDate(iso).getTime());
  const length = PERIOD_MS[GRAIN] || DAY_MS;
  const marks = [];
  for (const row of changes.rows) {
    const moment = Date.parse(row[at]);
    if (Number.isNaN(moment)) continue;
    let index = -1;
    for (let i = 0; i < starts.length && starts[i] <= moment; i += 1) index = i;
    let position;
    if (index < 0) {
      position = (moment - starts[0]) / length - 0.5;
    } else {
      const next = index + 1 < starts.length ? starts[index + 1] : starts[index] + length;
      position = index - 0.5 + (moment - starts[index]) / (next - starts[index]);
    }
    if (position < -1.5 || position > starts.length + 0.5) continue; // far outside the periods drawn
    position = Math.min(Math.max(position, -0.5), starts.length - 0.5);
    marks.push({ position, label: summary >= 0 && row[summary] ? row[summary] : `→ ${row[to]}` });
  }
  return marks;
}

function baseOptions() {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: REDUCED_MOTION ? false : { duration: 300 },
    interaction: { mode: "index", intersect: false },
    plugins: {
      legend: { position: "bottom", labels: { boxWidth: 12, boxHeight: 12, padding: 14 } },
      tooltip: { padding: 10 },
    },
  };
}

function periodAxis(periods) {
  return {
    offset: true, // each period is a band, its point in the middle (see switchMarks)
    grid: { display: false },
    ticks: {
      autoSkip: true,
      maxRotation: 0,
      autoSkipPadding: 12,
      callback: (_value, index) => periodShort(periods[index]),
    },
  };
}

function newChart(card, dataset, body, config, { height = null } = {}) {
  const chartBox = make("div", "chart");
  if (height) chartBox.style.height = `${height}px`;
  const canvas = document.createElement("canvas");
  const title = card.querySelector(".card__title")?.textContent || dataset.title;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${title}: a chart; the Table button shows its figures.`);
  canvas.dataset.chart = card.dataset.view;
  chartBox.append(canvas);
  const tableBox = dataTable(dataset);
  body.append(chartBox, tableBox);
  addTableToggle(card, chartBox, tableBox);
  return new Chart(canvas, config);
}

const VIEWS = {
  tiles: drawTiles,
  table: drawTable,
  compare: drawCompare,
  comments: drawComments,
  heatmap: drawHeatmap,

  csat(card, dataset, body) {
    const periods = values(dataset, "period");
    const options = baseOptions();
    options.scales = {
      x: periodAxis(periods),
      y: {
        min: 0,
        max: 100,
        title: { display: true, text: "CSAT" },
        ticks: { callback: (value) => `${value} %` },
        grid: { color: COLORS.grid },
      },
      ratings: {
        position: "right",
        beginAtZero: true,
        title: { display: true, text: "ratings" },
        ticks: { precision: 0 },
        grid: { drawOnChartArea: false },
      },
    };
    options.plugins.tooltip.callbacks = {
      title: (items) => periodLong(periods[items[0].dataIndex]),
      label: (item) => (item.dataset.yAxisID === "y"
        ? `CSAT ${formatPercent(item.raw)}`
        : `${formatNumber(item.raw)} ratings`),
    };
    options.plugins.switchMarkers = { marks: switchMarks(periods) };
    newChart(card, dataset, body, {
      type: "line",
      data: {
        labels: periods,
        datasets: [
          {
            label: "CSAT %",
            data: values(dataset, "CSAT %"),
            yAxisID: "y",
            borderColor: COLORS.brand,
            backgroundColor: COLORS.brand,
            borderWidth: 2,
            cubicInterpolationMode: "monotone",
            pointRadius: periods.length > 40 ? 0 : 3,
            spanGaps: true,
            clip: 6, // a point at 100 % is drawn whole, above the top of the area
            order: 0,
          },
          {
            type: "bar",
            label: "ratings",
            data: values(dataset, "ratings"),
            yAxisID: "ratings",
            backgroundColor: COLORS.bars,
            maxBarThickness: 40,
            order: 1,
          },
        ],
      },
      options,
      plugins: [switchMarkers],
    });
  },

  volume(card, dataset, body) {
    const periods = values(dataset, "period");
    const options = baseOptions();
    options.scales = {
      x: periodAxis(periods),
      y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: COLORS.grid } },
    };
    options.plugins.tooltip.callbacks = {
      title: (items) => periodLong(periods[items[0].dataIndex]),
      label: (item) => `${formatNumber(item.raw)} ${item.dataset.label}`,
    };
    options.plugins.switchMarkers = { marks: switchMarks(periods) };
    const line = (label, color) => ({
      label,
      data: values(dataset, label),
      borderColor: color,
      backgroundColor: color,
      borderWidth: 2,
      cubicInterpolationMode: "monotone",
      pointRadius: periods.length > 40 ? 0 : 3,
    });
    newChart(card, dataset, body, {
      type: "line",
      data: { labels: periods, datasets: [line("conversations", COLORS.brand), line("messages", COLORS.teal)] },
      options,
      plugins: [switchMarkers],
    });
  },

  scores(card, dataset, body) {
    const scores = values(dataset, "score");
    const counts = values(dataset, "ratings");
    const total = counts.reduce((sum, n) => sum + (n || 0), 0);
    const options = baseOptions();
    options.plugins.legend.display = false;
    options.scales = {
      x: { grid: { display: false }, title: { display: true, text: "score (1 = very bad, 5 = excellent)" } },
      y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: COLORS.grid } },
    };
    options.plugins.tooltip.callbacks = {
      title: (items) => `Score ${scores[items[0].dataIndex]}`,
      label: (item) => `${formatNumber(item.raw)} ratings (${formatPercent(total ? (100 * item.raw) / total : null)})`,
    };
    newChart(card, dataset, body, {
      type: "bar",
      data: {
        labels: scores.map(String),
        datasets: [{
          label: "ratings",
          data: counts,
          backgroundColor: scores.map((score) => COLORS.scores[score - 1] || COLORS.muted),
          borderRadius: 4,
        }],
      },
      options,
    });
  },

  reasons(card, dataset, body) {
    const reasons = values(dataset, "reason");
    const options = baseOptions();
    options.indexAxis = "y";
    options.plugins.legend.display = false;
    options.interaction = { mode: "nearest", axis: "y", intersect: false };
    options.scales = {
      x: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: COLORS.grid } },
      y: { grid: { display: false }, ticks: { autoSkip: false } },
    };
    options.plugins.tooltip.callbacks = {
      title: (items) => reasons[items[0].dataIndex],
      label: (item) => `${formatNumber(item.raw)} conversations`,
    };
    const labels = reasons.map((reason) => wrapLabel(String(reason), card.clientWidth < 520 ? 18 : 30));
    // Room for every label's lines: Chart.js would skip labels that do not fit.
    const height = 56 + labels.reduce((sum, label) => sum + Math.max(40, 16 * [label].flat().length + 12), 0);
    newChart(card, dataset, body, {
      type: "bar",
      data: {
        labels,
        datasets: [{
          label: "conversations",
          data: values(dataset, "conversations"),
          backgroundColor: COLORS.amber,
          borderRadius: 4,
          maxBarThickness: 28,
        }],
      },
      options,
    }, { height });
  },

  agents(card, dataset, body) {
    const names = values(dataset, "agent");
    const csat = values(dataset, "CSAT %");
    const options = baseOptions();
    options.plugins.legend.display = false;
    options.scales = {
      x: { grid: { display: false } },
      y: { beginAtZero: true, ticks: { precision: 0 }, grid: { color: COLORS.grid } },
    };
    options.plugins.tooltip.callbacks = {
      label: (item) => `${formatNumber(item.raw)} conversations · CSAT ${formatPercent(csat[item.dataIndex])}`,
    };
    newChart(card, dataset, body, {
      type: "bar",
      data: {
        labels: names,
        datasets: [{
          label: "conversations",
          data: values(dataset, "conversations"),
          backgroundColor: COLORS.brand,
          borderRadius: 4,
          maxBarThickness: 56,
        }],
      },
      options,
    });
  },

  ttft(card, dataset, body) {
    groupedBars(
      card,
      dataset,
      body,
      ["TTFT p50 ms", "TTFT p95 ms", "first answer token p50 ms", "first answer token p95 ms"],
      ["first token p50", "first token p95", "first answer token p50", "first answer token p95"],
      {
        format: formatMs,
        tick: (value) => `${value} ms`,
      },
    );
  },

  "variant-rates": (card, dataset, body) => {
    groupedBars(card, dataset, body, ["CSAT %", "handoff rate %"], ["CSAT", "handoff rate"], {
      format: formatPercent,
      tick: (value) => `${value} %`,
      max: 100,
    });
  },
};

/** One group of bars per variant, one bar per column. */
function groupedBars(card, dataset, body, columns, labels, { format, tick, max }) {
  const variants = values(dataset, "variant");
  const options = baseOptions();
  options.scales = {
    x: { grid: { display: false } },
    y: { beginAtZero: true, max, ticks: { callback: tick }, grid: { color: COLORS.grid } },
  };
  options.plugins.tooltip.callbacks = { label: (item) => `${item.dataset.label}: ${format(item.raw)}` };
  newChart(card, dataset, body, {
    type: "bar",
    data: {
      labels: variants,
      datasets: columns.map((name, i) => ({
        label: labels[i],
        data: values(dataset, name),
        backgroundColor: COLORS.series[i],
        borderRadius: 4,
        maxBarThickness: 48,
      })),
    },
    options,
  });
}

/** Splits a long axis label into lines (Chart.js draws an array as lines). */
function wrapLabel(text, width = 26) {
  const lines = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && (line + " " + word).length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines.length > 1 ? lines : text;
}

// --- tiles, tables, comments, the heatmap --------------------------------------------------------
const TILES = {
  csat_summary: [
    {
      label: "CSAT",
      column: "CSAT %",
      format: formatPercent,
      note: (row, ds) => (row[column(ds, "CSAT %")] == null ? "no ratings yet" : "ratings of 4 or 5"),
    },
    { label: "Ratings", column: "ratings", format: formatNumber },
    { label: "Resolved conversations", column: "resolved conversations", format: formatNumber },
    {
      label: "Response rate",
      column: "response rate %",
      format: formatPercent,
      note: (row, ds) => (row[column(ds, "response rate %")] == null
        ? "no resolved conversations"
        : "of resolved conversations were rated"),
    },
  ],
  bot_summary: [
    { label: "Conversations", column: "conversations", format: formatNumber },
    {
      label: "Resolved by the bot",
      column: "bot resolution rate %",
      format: formatPercent,
      note: () => "of resolved conversations, with no person",
    },
    { label: "Handoff rate", column: "handoff rate %", format: formatPercent, note: () => "handed to a person" },
    {
      label: "First response",
      column: "first response p50 s",
      format: formatSeconds,
      note: (row, ds) => `median · p95 ${formatSeconds(row[column(ds, "first response p95 s")])}`,
    },
    {
      label: "Resolution time",
      column: "resolution p50 s",
      format: formatSeconds,
      note: (row, ds) => `median · p95 ${formatSeconds(row[column(ds, "resolution p95 s")])}`,
    },
  ],
};

function drawTiles(card, dataset, body) {
  const row = dataset.rows[0];
  const list = make("dl", "tiles");
  const specs = TILES[card.dataset.dataset]
    || dataset.columns.map((name) => ({ label: name, column: name, format: formatNumber }));
  for (const spec of specs) {
    const index = column(dataset, spec.column);
    if (index < 0) continue;
    const tile = make("div", "tile");
    tile.dataset.column = spec.column;
    tile.append(make("dt", "tile__label", spec.label));
    tile.append(make("dd", "tile__value", spec.format(row[index])));
    if (spec.note) tile.append(make("dd", "tile__note", spec.note(row, dataset)));
    list.append(tile);
  }
  body.append(list);
}

function drawTable(card, dataset, body) {
  body.append(dataTable(dataset, { stack: true }));
}

/** The variants side by side: one column per variant, one row per figure. */
function drawCompare(card, dataset, body) {
  const transposed = {
    title: dataset.title,
    columns: ["", ...dataset.rows.map((row) => String(row[0]))],
    rows: dataset.columns.slice(1).map((name, i) => [name, ...dataset.rows.map((row) => row[i + 1])]),
  };
  const box = dataTable(transposed);
  box.classList.add("table-box--compare");
  // Each figure keeps its unit: the cells are formatted by the row's name, not the column's.
  for (const tr of box.querySelectorAll("tbody tr")) {
    const name = tr.firstElementChild.textContent;
    for (const cell of tr.querySelectorAll("td")) {
      const raw = cell.dataset.value;
      cell.textContent = cellText(raw === "" ? null : Number(raw), name);
      cell.classList.add("num");
    }
  }
  for (const th of box.querySelectorAll("thead th")) th.classList.add("num");
  body.append(box);
}

const COMMENTS_SHOWN = 10;

function drawComments(card, dataset, body) {
  const adminUrl = root.dataset.adminConversations;
  const box = dataTable(dataset, {
    stack: true,
    decorate(cell, name, value) {
      if (name === "score") {
        cell.textContent = "";
        const badge = make("span", `score score--${value}`, String(value));
        badge.setAttribute("aria-label", `${value} out of 5`);
        cell.append(badge);
      } else if (name === "comment") {
        cell.classList.add("comment");
      } else if (name === "conversation" && adminUrl && value) {
        cell.textContent = "";
        const link = make("a", "conversation-link", String(value));
        link.href = `${adminUrl}?q=${encodeURIComponent(value)}`;
        link.title = "Find this conversation in the admin";
        cell.append(link);
      }
    },
  });
  body.append(box);
  const rows = [...box.querySelectorAll("tbody tr")];
  if (rows.length <= COMMENTS_SHOWN) return;
  for (const row of rows.slice(COMMENTS_SHOWN)) row.hidden = true;
  const more = make("button", "button button--ghost button--small more", `Show all ${rows.length} comments`);
  more.type = "button";
  more.addEventListener("click", () => {
    for (const row of rows) row.hidden = false;
    more.remove();
    rows[COMMENTS_SHOWN].querySelector("a, th")?.focus?.();
  });
  body.append(more);
}

function drawHeatmap(card, dataset, body) {
  const hours = dataset.columns.slice(1);
  const max = Math.max(1, ...dataset.rows.flatMap((row) => row.slice(1)));
  const box = make("div", "heatmap-box");
  const table = make("table", "heatmap");
  table.append(make("caption", "visually-hidden", dataset.title));
  const head = make("tr");
  const corner = make("th", null, "");
  corner.scope = "col";
  head.append(corner);
  for (const hour of hours) {
    const th = make("th", null, String(Number(hour)));
    th.scope = "col";
    th.title = `${hour}:00–${hour}:59 UTC`;
    head.append(th);
  }
  const thead = make("thead");
  thead.append(head);
  const tbody = make("tbody");
  for (const row of dataset.rows) {
    const tr = make("tr");
    const day = make("th", null, row[0]);
    day.scope = "row";
    tr.append(day);
    row.slice(1).forEach((count, i) => {
      const share = count / max;
      const cell = make("td", count ? null : "heatmap__zero", count ? formatNumber(count) : "");
      // Colour from the figure; set through the CSSOM (allowed by a strict style policy).
      if (count) cell.style.backgroundColor = `rgba(31, 95, 191, ${(0.08 + 0.92 * share).toFixed(3)})`;
      if (share > 0.5) cell.classList.add("heatmap__dark");
      cell.title = `${row[0]} ${hours[i]}:00–${hours[i]}:59 UTC: ${formatNumber(count)} messages`;
      tr.append(cell);
    });
    tbody.append(tr);
  }
  table.append(thead, tbody);
  box.append(table);
  const legend = make("p", "heatmap__legend");
  legend.setAttribute("aria-hidden", "true");
  legend.append(make("span", null, "0"), make("span", "heatmap__scale"), make("span", null, formatNumber(max)));
  const chartBox = make("div", "heatmap-chart");
  chartBox.append(box, legend);
  const tableBox = dataTable(dataset);
  body.append(chartBox, tableBox);
  addTableToggle(card, chartBox, tableBox);
}

// --- the page -----------------------------------------------------------------------------------
function isEmpty(dataset, view) {
  if (!dataset.rows.length) return true;
  if (view === "scores") return values(dataset, "ratings").every((n) => !n);
  if (view === "heatmap") return dataset.rows.every((row) => row.slice(1).every((n) => !n));
  return false;
}

function drawCard(card) {
  const dataset = DATA[card.dataset.dataset];
  const body = card.querySelector(".card__body");
  const title = card.querySelector(".card__title")?.textContent || "";
  for (const link of card.querySelectorAll(".card__csv")) {
    link.setAttribute("aria-label", `Download “${title}” as CSV`);
    link.title = "Download as CSV (a spreadsheet)";
  }
  if (!dataset) {
    body.append(emptyState("This figure is not available."));
    return;
  }
  if (isEmpty(dataset, card.dataset.view)) {
    card.classList.add("card--empty");
    body.append(emptyState(card.dataset.empty));
    return;
  }
  const draw = VIEWS[card.dataset.view] || drawTable;
  try {
    draw(card, dataset, body);
  } catch (error) {
    // One figure that cannot be drawn must not take the page down: its table shows instead.
    card.querySelector(".toggle")?.remove();
    body.replaceChildren(dataTable(dataset));
    console.error(error);
  }
}

/** "Last 7 / 30 / 90 days": sets the dates (in UTC, like the server) and applies the filters. */
function bindQuickPeriods() {
  const group = document.querySelector(".filters__quick");
  const form = document.getElementById("filters");
  if (!group || !form) return;
  group.hidden = false;
  group.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-days]");
    if (!button) return;
    const today = new Date();
    const first = new Date(today.getTime() - (Number(button.dataset.days) - 1) * DAY_MS);
    form.elements.from.value = first.toISOString().slice(0, 10);
    form.elements.to.value = today.toISOString().slice(0, 10);
    form.requestSubmit();
  });
}

function start() {
  if (!root) return;
  if (Chart) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = COLORS.muted;
  }
  bindQuickPeriods();
  for (const card of document.querySelectorAll(".card[data-dataset]")) {
    if (!Chart && !["tiles", "table", "compare", "comments", "heatmap"].includes(card.dataset.view)) {
      card.dataset.view = "table"; // the charting library did not load: the figures as tables
    }
    drawCard(card);
  }
}

start();
