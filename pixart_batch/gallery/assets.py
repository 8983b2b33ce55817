"""The gallery's inline CSS and JavaScript (no external asset: the pages work offline from ``file://``).

The script runs over the page's data (``<script type="application/json" id="data">``: per shown image
its filter text, label id, scores and whether ``--where`` keeps it) and the cards of the page (each
``data-i`` an index into that data): it filters (words, label, a score range, kept / dropped), sorts
the cards (by any score, best or worst first; missing scores last), counts what matches (the index:
over every shown image, not only its strip), keeps its state in the address (``#q=cat&sort=...``) and
gives a long caption a "more" button. It only sets text, attributes and the order of existing nodes:
no HTML is built from data. ``<body>`` records the result for tests and the inspector:
``data-visible``, ``data-order`` (the visible cards' keys), ``data-images-loaded`` / ``-broken``.
"""

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,sans-serif;margin:0;padding:16px 24px 40px;background:#f4f4f2;color:#1d1d1f}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
a{color:#0b57d0}
.sub{color:#555;margin:0 0 8px;overflow-wrap:anywhere}
nav.pages{display:flex;flex-wrap:wrap;gap:6px 14px;margin:6px 0 4px;font-size:13px}
.bar{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:8px 12px;align-items:center;
  margin:10px -24px 14px;padding:8px 24px;background:#f4f4f2ee;border-bottom:1px solid #ddd}
.bar input,.bar select{font:inherit;padding:5px 8px;border:1px solid #aaa;border-radius:6px;background:#fff}
#q{width:min(340px,100%)}
.bar input[type=number]{width:6.5em}
.bar label{display:flex;gap:6px;align-items:center;white-space:nowrap}
.count{font-weight:600}
table{border-collapse:collapse;background:#fff;margin:4px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px;align-items:start}
.strip{grid-template-columns:repeat(auto-fill,minmax(180px,1fr))}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px;margin:0;min-width:0;
  display:flex;flex-direction:column;gap:4px}
.card[hidden]{display:none}
.card.dropped{border-color:#e0b4b4;background:#fffafa}
.card img{display:block;max-width:100%;height:auto;margin:0 auto 2px;background:#e8e8e8;border-radius:4px}
.noimg{padding:40px 0;text-align:center;color:#a00;background:#fbeaea}
.card p{margin:0;overflow-wrap:anywhere}
.chips{display:flex;flex-wrap:wrap;gap:4px}
.chip{font-size:12px;line-height:18px;padding:0 7px;border-radius:9px;background:#eef0f3;color:#333;
  white-space:nowrap;text-decoration:none;max-width:100%;overflow:hidden;text-overflow:ellipsis}
a.chip:hover{text-decoration:underline}
.chip.label{background:#e3ecfb;color:#0b3d91;font-weight:600}
.chip.score{background:#fdf3dc;color:#6b4e00;font-variant-numeric:tabular-nums}
.chip.kept{background:#e2f3e4;color:#1b5e20}.chip.drop{background:#f9e0e0;color:#8e1b1b}
.clamp{display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:4;line-clamp:4;overflow:hidden}
.prompt.clamp{-webkit-line-clamp:3;line-clamp:3}
.card.open .clamp{display:block;-webkit-line-clamp:unset;line-clamp:none;overflow:visible}
.cap{font-weight:600}
.prompt{color:#444}
.cap::before,.prompt::before{font:600 11px ui-monospace,monospace;color:#777;margin-right:6px;
  text-transform:uppercase}
.cap::before{content:"caption"}.prompt::before{content:"prompt"}
button.more{align-self:flex-start;font:12px system-ui,sans-serif;color:#0b57d0;background:none;border:0;
  padding:0;cursor:pointer}
.meta{color:#666;font-size:12px;font-family:ui-monospace,monospace}
.num{white-space:nowrap;word-break:keep-all;overflow-wrap:normal}
.warn{color:#a00}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:12px;align-items:start}
.plots figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px}
.plots img{width:100%;height:auto}
.where{background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px 12px}
code{font:13px ui-monospace,monospace;background:#eef0f3;padding:1px 4px;border-radius:4px;
  overflow-wrap:anywhere}
"""

JS = r"""
(function () {
  function el(id) { return document.getElementById(id); }
  var rows = JSON.parse(el('data').textContent);
  var grid = document.querySelector('.grid[data-cards]'), body = document.body;
  var cards = {};
  [].forEach.call(document.querySelectorAll('.card[data-i]'), function (c) {
    cards[c.getAttribute('data-i')] = c;
  });
  var controls = ['q', 'label', 'sort', 'score', 'min', 'max', 'keep'];
  function value(name) { var c = el(name); return c ? c.value : ''; }
  function number(text) { return text === '' || isNaN(Number(text)) ? null : Number(text); }
  function matches(r, s, anyLabel) {
    if (!s.words.every(function (w) { return r.t.indexOf(w) >= 0; })) return false;
    if (!anyLabel && s.label !== '' && String(r.l) !== s.label) return false;
    if (s.keep !== '' && (r.w === true ? 'kept' : 'dropped') !== s.keep) return false;
    if (s.lo !== null || s.hi !== null) {
      var v = r.s[s.score];
      if (typeof v !== 'number') return false;
      if (s.lo !== null && v < s.lo) return false;
      if (s.hi !== null && v > s.hi) return false;
    }
    return true;
  }
  function order(s) {
    var indices = rows.map(function (r, i) { return i; });
    if (!s.sort) return indices;
    var parts = s.sort.split(':'), name = parts[0], sign = parts[1] === 'asc' ? 1 : -1;
    return indices.sort(function (a, b) {
      var x = rows[a].s[name], y = rows[b].s[name];
      var mx = typeof x !== 'number', my = typeof y !== 'number';
      if (mx || my) return mx === my ? a - b : (mx ? 1 : -1);
      return x === y ? a - b : sign * (x - y);
    });
  }
  function apply(save) {
    var s = {words: value('q').toLowerCase().split(/\s+/).filter(Boolean), label: value('label'),
             sort: value('sort'), score: value('score'), lo: number(value('min')), hi: number(value('max')),
             keep: value('keep')};
    var n = 0, perLabel = {}, shown = [];
    rows.forEach(function (r, i) {
      var ok = matches(r, s, false);
      if (ok) n++;
      if (r.l !== null && matches(r, s, true)) perLabel[r.l] = (perLabel[r.l] || 0) + 1;
      if (cards[i]) cards[i].hidden = !ok;
    });
    order(s).forEach(function (i) {
      var c = cards[i];
      if (!c) return;
      if (grid) grid.appendChild(c);
      if (!c.hidden) shown.push(c.getAttribute('data-key'));
    });
    var select = el('label');
    if (select) [].forEach.call(select.options, function (o) {
      if (o.value !== '') o.textContent = o.getAttribute('data-name') + ' (' + (perLabel[o.value] || 0) + ')';
    });
    el('shown').textContent = String(n);
    body.setAttribute('data-visible', String(n));
    body.setAttribute('data-order', shown.join(' '));
    if (save) {
      var hash = controls.filter(function (k) { return value(k) !== ''; })
        .map(function (k) { return k + '=' + encodeURIComponent(value(k)); }).join('&');
      var address = hash ? '#' + hash : location.pathname + location.search;
      try { history.replaceState(null, '', address); } catch (e) {}
    }
  }
  location.hash.replace(/^#/, '').split('&').forEach(function (part) {
    var at = part.indexOf('='), c = at > 0 ? el(part.slice(0, at)) : null;
    if (!c || controls.indexOf(c.id) < 0) return;
    try { c.value = decodeURIComponent(part.slice(at + 1)); } catch (e) { c.value = part.slice(at + 1); }
  });
  controls.forEach(function (k) {
    var c = el(k);
    if (c) c.addEventListener(c.tagName === 'SELECT' ? 'change' : 'input', function () { apply(true); });
  });
  apply(false);
  function more() {
    [].forEach.call(document.querySelectorAll('.card'), function (c) {
      var b = c.querySelector('button.more');
      if (!b || c.classList.contains('open')) return;
      b.hidden = ![].some.call(c.querySelectorAll('.clamp'), function (t) {
        return t.scrollHeight > t.clientHeight + 1;
      });
    });
  }
  document.addEventListener('click', function (e) {
    var b = e.target;
    if (!b.classList || !b.classList.contains('more')) return;
    var c = b.closest('.card'), open = c.classList.toggle('open');
    b.textContent = open ? 'less' : 'more';
  });
  window.addEventListener('load', function () {
    more();
    var ok = 0, bad = 0, cardsLoaded = 0;
    [].forEach.call(document.images, function (i) {
      var good = i.complete && i.naturalWidth > 0;
      if (good) ok++; else bad++;
      if (good && i.closest('.card')) cardsLoaded++;
    });
    body.setAttribute('data-images-loaded', String(ok));
    body.setAttribute('data-images-broken', String(bad));
    body.setAttribute('data-card-images-loaded', String(cardsLoaded));
    var buttons = document.querySelectorAll('button.more:not([hidden])').length;
    body.setAttribute('data-more-buttons', String(buttons));
  });
  window.addEventListener('resize', more);
})();
"""
