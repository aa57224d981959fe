// capstan dashboard: draws a pool's chart with uPlot and keeps it current.
//
// The page's #chart names its data in data-src (/pools/<id>/chart.json); the buttons
// [data-window] pick 1h, 1d or 1w. The data is refetched every 5 s (1 h window) to 60 s
// (1 w) without reloading the page; the panels around it are refreshed by htmx
// (hx-trigger on the page). After every successful draw #chart carries data-points
// (x points drawn) and data-last-at (ms of the newest point). No inline script: the
// page's Content-Security-Policy is default-src 'self'.
(function () {
  'use strict';

  var chartEl = document.getElementById('chart');
  if (!chartEl || typeof uPlot === 'undefined') {
    return;
  }
  var src = chartEl.getAttribute('data-src');
  var HEIGHT = 380;
  var REFRESH_MS = { '1h': 5000, '1d': 30000, '1w': 60000 };
  // Capacity by state, bottom of the stack first.
  var STACK = [
    ['ready_busy', 'Ready busy', '#2f9e44'],
    ['ready_idle', 'Ready idle', '#8ce99a'],
    ['draining', 'Draining', '#fcc419'],
    ['booting', 'Booting', '#74c0fc'],
    ['requested', 'Requested', '#b197fc'],
  ];

  var win = '1h';
  var plot = null;
  var raw = null;
  var timer = null;

  var status = document.createElement('p');
  status.className = 'chart-status';
  chartEl.parentNode.insertBefore(status, chartEl.nextSibling);

  function fmt(v) {
    if (v == null || isNaN(v)) {
      return '—';
    }
    return Math.abs(v - Math.round(v)) < 0.05 ? String(Math.round(v)) : v.toFixed(1);
  }

  // uPlot's columns: x, the stack's running totals (top first, so each lower layer
  // paints over the one above), then the lines.
  function columns(d) {
    var n = d.x.length;
    var acc = [];
    var totals = [];
    for (var i = 0; i < n; i++) {
      acc.push(0);
    }
    // Where the pool's points are missing (only the queue is known) the stack is a
    // gap, not a zero.
    STACK.forEach(function (s) {
      acc = acc.map(function (v, i) {
        var own = d[s[0]][i];
        return v == null || own == null ? null : v + own;
      });
      totals.push(acc.slice());
    });
    var out = [d.x];
    for (var k = totals.length - 1; k >= 0; k--) {
      out.push(totals[k]);
    }
    out.push(d.forecast_upper, d.forecast_mean, d.target, d.running, d.pending);
    return out;
  }

  function triangle(ctx, x, y, up, color) {
    var s = 5 * uPlot.pxRatio;
    ctx.beginPath();
    ctx.moveTo(x, y - (up ? s : -s));
    ctx.lineTo(x - s, y + (up ? s : -s));
    ctx.lineTo(x + s, y + (up ? s : -s));
    ctx.closePath();
    ctx.fillStyle = color;
    ctx.fill();
  }

  // Launches as green triangles along the bottom, terminations as red ones along the top.
  function drawMarks(u) {
    if (!raw) {
      return;
    }
    var b = u.bbox;
    var ctx = u.ctx;
    ctx.save();
    raw.marks.forEach(function (m) {
      var x = u.valToPos(m.at, 'x', true);
      if (x < b.left || x > b.left + b.width) {
        return;
      }
      if (m.launched > 0) {
        triangle(ctx, x, b.top + b.height - 6 * uPlot.pxRatio, true, '#2b8a3e');
      }
      if (m.terminated > 0) {
        triangle(ctx, x, b.top + 6 * uPlot.pxRatio, false, '#c92a2a');
      }
    });
    ctx.restore();
  }

  function options() {
    var series = [{}];
    for (var i = STACK.length - 1; i >= 0; i--) {
      (function (key, label, color) {
        series.push({
          label: label,
          stroke: color,
          fill: color + 'aa',
          width: 1,
          points: { show: false },
          // The legend shows the state's own slots, not the running total.
          value: function (u, v, si, idx) {
            return idx == null || !raw ? '—' : fmt(raw[key][idx]);
          },
        });
      })(STACK[i][0], STACK[i][1], STACK[i][2]);
    }
    series.push({ label: 'Forecast top', stroke: '#9c36b5', width: 1, dash: [4, 4], points: { show: false } });
    series.push({ label: 'Forecast mean', stroke: '#9c36b5', width: 2, points: { show: false } });
    series.push({ label: 'Target', stroke: '#1971c2', width: 2, points: { show: false }, paths: uPlot.paths.stepped({ align: 1 }) });
    series.push({ label: 'Running', stroke: '#212529', width: 1.5, points: { show: false } });
    series.push({ label: 'Pending', stroke: '#e03131', width: 2, points: { show: false } });
    var upper = STACK.length + 1;
    return {
      width: Math.max(chartEl.clientWidth, 320),
      height: HEIGHT,
      series: series,
      bands: [{ series: [upper, upper + 1], fill: 'rgba(156, 54, 181, 0.15)' }],
      scales: {
        x: {
          time: true,
          range: function (u, min, max) {
            return raw ? [raw.since, raw.until] : [min, max];
          },
        },
        y: { range: function (u, min, max) { return [0, Math.max(max, 1) * 1.05]; } },
      },
      axes: [{}, { label: 'slots / tasks' }],
      hooks: { draw: [drawMarks] },
    };
  }

  // The loop records a pool point about every 10 s, so in buckets narrower than that
  // (5 s for the hour view) every other bucket is empty, and uPlot would draw no line
  // between lone points. Hold each value over the empty buckets up to 30 s; longer
  // gaps (before the loop ran, a stopped service) stay gaps.
  var POOL_KEYS = ['requested', 'booting', 'ready_idle', 'ready_busy', 'draining', 'target', 'forecast_mean', 'forecast_upper'];
  function holdShortGaps(d) {
    var maxGap = Math.max(1, Math.ceil(30 / Math.max(d.width_s || 1, 1)));
    POOL_KEYS.forEach(function (key) {
      var col = d[key];
      var last = null;
      var run = 0;
      for (var i = 0; i < col.length; i++) {
        if (col[i] != null) {
          last = col[i];
          run = 0;
        } else if (last != null && run < maxGap) {
          col[i] = last;
          run++;
        } else {
          last = null;
        }
      }
    });
  }

  function draw(d) {
    holdShortGaps(d);
    raw = d;
    var data = columns(d);
    if (!plot) {
      plot = new uPlot(options(), data, chartEl);
    } else {
      plot.setData(data);
    }
    chartEl.setAttribute('data-points', String(d.x.length));
    chartEl.setAttribute('data-last-at', d.x.length ? String(d.x[d.x.length - 1] * 1000) : '');
    status.textContent = d.x.length
      ? ''
      : 'No points recorded in this window yet: the reconcile loop records one about every 10 s.';
  }

  function refresh() {
    clearTimeout(timer);
    var want = win;
    fetch(src + '?window=' + encodeURIComponent(want), {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    })
      .then(function (r) {
        if (r.status === 401) {
          window.location.href = '/signin?ended=1';
          return null;
        }
        if (!r.ok) {
          return r.json().then(function (e) {
            throw new Error(e.message || 'HTTP ' + r.status);
          });
        }
        return r.json();
      })
      .then(function (d) {
        if (d && want === win) {
          draw(d);
        }
      })
      .catch(function (e) {
        status.textContent = 'Chart data unavailable: ' + e.message + ' (retrying)';
      })
      .then(function () {
        if (want === win) {
          timer = setTimeout(refresh, REFRESH_MS[win]);
        }
      });
  }

  document.querySelectorAll('button[data-window]').forEach(function (b) {
    b.addEventListener('click', function () {
      win = b.getAttribute('data-window');
      document.querySelectorAll('button[data-window]').forEach(function (o) {
        o.setAttribute('aria-pressed', o === b ? 'true' : 'false');
      });
      refresh();
    });
  });

  window.addEventListener('resize', function () {
    if (plot) {
      plot.setSize({ width: Math.max(chartEl.clientWidth, 320), height: HEIGHT });
    }
  });

  refresh();
})();
