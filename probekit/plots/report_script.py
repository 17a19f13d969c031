"""The report page's own JavaScript and styles (plotly.js itself is inlined beside them).

The script draws every figure from the page's JSON data, opens a cell's panel on a heatmap click
(or a click on a table row that names a cell, or a ``#cell=KEY`` address), and builds the layer
selector of each curves figure. It builds the panel with DOM calls and ``textContent`` only: names
read from result files are never parsed as HTML.
"""

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.2em auto;max-width:1400px;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
tr[data-cell]{cursor:pointer} tr[data-cell]:hover{background:#eef4ff}
figure{display:inline-block;margin:.6em;vertical-align:top;max-width:48%} figure
img{max-width:100%;height:auto;border:1px solid #eee}
figure.plot{display:block;max-width:none;margin:1em 0}
figcaption{font-size:.85em;color:#555} pre{background:#f6f6f6;padding:.8em;font-size:.85em;white-space:pre-wrap;
     overflow-wrap:anywhere}
.note{color:#666;font-size:.9em} .warn{color:#a40}
.answer{display:grid;grid-template-columns:minmax(300px,1fr) minmax(420px,1.5fr);gap:1.2em;align-items:start}
@media (max-width:900px){.answer{grid-template-columns:1fr}}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em .9em;margin:.5em 0;background:#fafafa}
.card .big{font-size:1.5em;font-weight:600} .card ul{margin:.3em 0;padding-left:1.2em}
button.open{font-size:.85em;margin-left:.4em;cursor:pointer}
details{margin:1em 0} summary{cursor:pointer;font-weight:600;font-size:1.15em}
.layer-selector{font-size:.82em;columns:4 14em;margin:.3em 0 .8em} .layer-selector label{display:block}
.layer-selector .buttons{column-span:all;margin-bottom:.3em}
#cell-panel{position:fixed;top:0;right:0;bottom:0;width:min(620px,96vw);overflow:auto;background:#fff;
     border-left:2px solid #888;box-shadow:-4px 0 12px rgba(0,0,0,.15);padding:.6em 1em;z-index:10}
#cell-panel table{font-size:.82em} #cell-panel td,#cell-panel th{padding:.15em .35em}
#cell-panel .close{float:right;font-size:1.1em;cursor:pointer}
td.diag{font-weight:700;outline:1px solid #333}
figure.thumb{margin:0;display:inline-block;text-align:center;max-width:none}
figure.thumb img{width:56px;height:56px;image-rendering:pixelated;border:2px solid transparent}
figure.thumb.query img{border-color:#333} figure.thumb.other img{border-color:#d62728}
figure.thumb figcaption{font-size:.68em;max-width:76px;overflow:hidden;white-space:nowrap}
.embedding{display:grid;grid-template-columns:1fr 90px;align-items:center}
"""

SCRIPT = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('probekit-data').textContent);
  var panel = document.getElementById('cell-panel');

  function node(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function table(id, header, rows, numeric) {
    var t = node('table', null, {id: id}), tr = node('tr');
    header.forEach(function (h) { tr.appendChild(node('th', h)); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = node('tr');
      r.forEach(function (v, i) { row.appendChild(node('td', v, numeric.indexOf(i) >= 0 ? {'class': 'num'} : {})); });
      t.appendChild(row);
    });
    return t;
  }

  function confusionTable(c, names) {
    var t = node('table', null, {id: 'cell-confusion'}), head = node('tr');
    head.appendChild(node('th', 'true \\ predicted'));
    names.forEach(function (n, j) { head.appendChild(node('th', j, {title: n})); });
    t.appendChild(head);
    c.confusion.forEach(function (row, i) {
      var tr = node('tr');
      tr.appendChild(node('th', i + ' ' + names[i]));
      var total = c.support[i] || 1;
      row.forEach(function (v, j) {
        var td = node('td', v, {'class': 'num' + (i === j ? ' diag' : '')});
        td.style.background = 'rgba(31,119,180,' + (0.85 * v / total).toFixed(3) + ')';
        if (v / total > 0.5) { td.style.color = '#fff'; }
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    return t;
  }

  function thumb(item, names, extra) {
    var figure = node('figure', null, {'class': 'thumb' + (extra || ''), 'data-id': item.id});
    figure.appendChild(node('img', null, {src: item.img, alt: names[item.label] || item.label}));
    figure.appendChild(node('figcaption', (names[item.label] || item.label) + (item.sim ? ' ' + item.sim : '')));
    return figure;
  }

  function neighbours(n, names) {
    panel.appendChild(node('h4', 'Nearest train images (cosine similarity of this cell\u2019s centred features)'));
    var t = node('table', null, {id: 'cell-neighbours'});
    n.queries.forEach(function (q) {
      var tr = node('tr'), first = node('td');
      first.appendChild(thumb(q, names, ' query'));
      tr.appendChild(first);
      q.neighbours.forEach(function (m) {
        var td = node('td');
        td.appendChild(thumb(m, names, m.label === q.label ? '' : ' other'));
        tr.appendChild(td);
      });
      t.appendChild(tr);
    });
    panel.appendChild(t);
    panel.appendChild(node('p', 'First column: a test image; then its nearest train images with their similarity ' +
      '(a red frame: another class).', {'class': 'note'}));
    panel.appendChild(node('h4', '2-D embedding of the test images (first two principal components)'));
    var box = node('div', null, {'class': 'embedding'});
    box.appendChild(node('div', null, {id: 'cell-embedding'}));
    var hover = node('figure', null, {'class': 'thumb', id: 'cell-embedding-thumb'});
    hover.appendChild(node('img', null, {alt: ''}));
    hover.appendChild(node('figcaption', 'hover a point'));
    box.appendChild(hover);
    panel.appendChild(box);
  }

  function embed(e, names) {
    var div = document.getElementById('cell-embedding'), classes = {};
    e.label.forEach(function (label, i) { (classes[label] = classes[label] || []).push(i); });
    var traces = Object.keys(classes).map(function (label) {
      var rows = classes[label];
      return {type: 'scatter', mode: 'markers', name: names[label] || label, marker: {size: 5},
              x: rows.map(function (i) { return e.x[i]; }), y: rows.map(function (i) { return e.y[i]; }),
              customdata: rows, hovertemplate: '%{fullData.name}<extra></extra>'};
    });
    Plotly.newPlot(div, traces, {height: 360, margin: {l: 30, r: 10, t: 10, b: 30}, legend: {font: {size: 9}},
      title: {text: ''}}, {displaylogo: false, responsive: true});
    div.on('plotly_hover', function (ev) {
      var i = ev.points[0].customdata, figure = document.getElementById('cell-embedding-thumb');
      figure.querySelector('img').src = e.img[i];
      figure.querySelector('figcaption').textContent = (names[e.label[i]] || e.label[i]) + ' (id ' + e.id[i] + ')';
      figure.setAttribute('data-id', e.id[i]);
    });
  }

  function openCell(key) {
    var c = data.cells[key];
    if (!c) { return false; }
    panel.textContent = '';
    var close = node('button', '×', {'class': 'close', title: 'close', id: 'cell-close'});
    close.addEventListener('click', function () { panel.hidden = true; panel.removeAttribute('data-cell'); });
    panel.appendChild(close);
    panel.appendChild(node('h3', c.model + ' · ' + c.probe + ' · ' + c.cell));
    if (c.noise) { panel.appendChild(node('p', c.noise + ' · ' + c.stage, {'class': 'note'})); }
    panel.appendChild(table('cell-numbers', c.numbers.header, [c.numbers.row], []));
    panel.appendChild(node('p', 'from ' + c.file + ' (test split; the cell\u2019s setting was chosen on val)',
      {'class': 'note'}));
    var names = data.classes[c.dataset] || [];
    if (c.confusion) {
      panel.appendChild(node('h4', c.kind === 'segment'
        ? 'Pixel confusion matrix (test images summed; rows: true class, columns: predicted)'
        : 'Confusion matrix (test; rows: true class, columns: predicted)'));
      panel.appendChild(confusionTable(c, names));
    }
    if (c.iou) {
      panel.appendChild(node('h4', 'IoU per class (test)'));
      panel.appendChild(table('cell-iou', ['class', 'IoU %', 'pixels'],
        c.iou.map(function (r, i) { return [i + ' ' + (names[i] || i), r, c.support[i]]; }), [1, 2]));
    } else if (c.worst) {
      panel.appendChild(node('h4', 'The test pairs where it goes most wrong'));
      panel.appendChild(table('cell-worst', ['pair', 'keypoints within the threshold', 'PCK %'], c.worst, [2]));
    } else if (c.recall) {
      panel.appendChild(node('h4', 'Per-class recall (test)'));
      panel.appendChild(table('cell-recall', ['class', 'recall %', 'images'],
        c.recall.map(function (r, i) { return [i + ' ' + (names[i] || i), r, c.support[i]]; }), [1, 2]));
    } else {
      panel.appendChild(node('p', 'No predictions sidecar beside ' + c.file + ': no confusion matrix.',
        {'class': 'note'}));
    }
    if (c.neighbours) { neighbours(c.neighbours, names); }
    if (c.maps) {
      panel.appendChild(node('h4', 'Test images, ground truth and this cell\u2019s features (PCA to RGB)'));
      var maps = node('table', null, {id: 'cell-maps'});
      c.maps.rows.forEach(function (r) {
        var tr = node('tr');
        [['image', r.img], ['ground truth', r.mask], ['features', r.pca]].forEach(function (p) {
          var td = node('td');
          td.appendChild(thumb({id: r.id, img: p[1], label: p[0]}, {}, ''));
          tr.appendChild(td);
        });
        maps.appendChild(tr);
      });
      panel.appendChild(maps);
    }
    panel.hidden = false;
    panel.setAttribute('data-cell', key);
    if (c.neighbours) { embed(c.neighbours.embedding, names); }
    return true;
  }
  window.probekitOpenCell = openCell;

  var drawn = 0;
  document.querySelectorAll('.plotly-fig').forEach(function (div) {
    var fig = data.figures[div.id];
    Plotly.newPlot(div, fig.data, fig.layout, {responsive: true, displaylogo: false}).then(function () {
      drawn += 1;
      document.body.setAttribute('data-plots-drawn', drawn + '/' + document.querySelectorAll('.plotly-fig').length);
    });
    if (fig.layout.meta && fig.layout.meta.clickable) {
      div.on('plotly_click', function (ev) {
        var p = ev.points && ev.points[0];
        if (p && p.customdata && p.customdata[0]) { openCell(p.customdata[0]); }
      });
    }
  });

  document.querySelectorAll('.layer-selector').forEach(function (box) {
    var div = document.getElementById(box.getAttribute('data-for'));
    var fig = data.figures[div.id], initial = fig.data.map(function (tr) { return tr.visible !== false; });
    var inputs = [];
    function set(states) {
      inputs.forEach(function (input, i) { input.checked = states[i]; });
      Plotly.restyle(div, {visible: states}, states.map(function (_, i) { return i; }));
    }
    var buttons = node('div', null, {'class': 'buttons'});
    [['all', function () { return initial.map(function () { return true; }); }],
     ['none', function () { return initial.map(function () { return false; }); }],
     ['default', function () { return initial.slice(); }]].forEach(function (b) {
      var button = node('button', b[0], {type: 'button', 'data-action': b[0]});
      button.addEventListener('click', function () { set(b[1]()); });
      buttons.appendChild(button);
    });
    box.appendChild(buttons);
    fig.data.forEach(function (tr, i) {
      var label = node('label'), input = node('input', null, {type: 'checkbox', 'data-layer': tr.name});
      input.checked = initial[i];
      input.addEventListener('change', function () { Plotly.restyle(div, {visible: input.checked}, [i]); });
      inputs.push(input);
      label.appendChild(input);
      label.appendChild(document.createTextNode(' ' + tr.name));
      box.appendChild(label);
    });
  });

  document.querySelectorAll('[data-cell]').forEach(function (e) {
    if (e === panel) { return; }
    e.addEventListener('click', function () { openCell(e.getAttribute('data-cell')); });
  });
  document.addEventListener('keydown', function (ev) {
    if (ev.key === 'Escape' && !panel.hidden) { panel.hidden = true; panel.removeAttribute('data-cell'); }
  });
  var hash = decodeURIComponent(location.hash || '');
  if (hash.indexOf('#cell=') === 0) { openCell(hash.slice(6)); }

  // Set once every image has decoded with a non-zero size (read by the browser tests).
  window.addEventListener('load', function () {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
    document.body.setAttribute('data-images-rendered', ok + '/' + images.length);
  });
})();
"""
