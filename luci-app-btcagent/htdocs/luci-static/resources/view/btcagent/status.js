'use strict';
'require view';
'require dom';
'require poll';
'require rpc';
'require uci';

/*
 * Live farm view. The agent rewrites STATUS_PATH atomically every few
 * seconds; this page reads it through rpcd's file.read (granted for that one
 * path in the ACL) and asks rc.list whether the service is running.
 *
 * Everything shown comes from the network (worker names, sub-accounts, pool
 * hosts), so it is always put into the page as text, never as markup.
 */

var STATUS_PATH = '/var/run/btcagent/status.json';
var POLL_SECONDS = 5;
/* A farm can have thousands of miners; the table shows at most this many rows. */
var MAX_WORKER_ROWS = 2000;

var callReadFile = rpc.declare({
	object: 'file',
	method: 'read',
	params: [ 'path' ],
	expect: { data: '' }
});

var callServiceList = rpc.declare({
	object: 'rc',
	method: 'list',
	params: [ 'name' ],
	expect: { '': {} }
});

var HASHRATE_UNITS = [ 'H/s', 'kH/s', 'MH/s', 'GH/s', 'TH/s', 'PH/s', 'EH/s' ];

function formatHashrate(hps) {
	if (typeof hps !== 'number' || !isFinite(hps) || hps < 0)
		return '-';
	var unit = 0;
	while (hps >= 1000 && unit < HASHRATE_UNITS.length - 1) {
		hps /= 1000;
		unit++;
	}
	var digits = (unit === 0 || hps >= 100) ? 0 : (hps >= 10 ? 1 : 2);
	return hps.toFixed(digits) + ' ' + HASHRATE_UNITS[unit];
}

function formatDuration(seconds) {
	if (typeof seconds !== 'number' || !isFinite(seconds) || seconds < 0)
		return '-';
	seconds = Math.floor(seconds);
	var d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24,
	    m = Math.floor(seconds / 60) % 60, s = seconds % 60;
	if (d > 0)
		return _('%dd %dh').format(d, h);
	if (h > 0)
		return _('%dh %dm').format(h, m);
	if (m > 0)
		return _('%dm %ds').format(m, s);
	return _('%ds').format(s);
}

function formatAge(seconds) {
	if (typeof seconds !== 'number' || !isFinite(seconds))
		return _('never');
	return _('%s ago').format(formatDuration(seconds));
}

function formatCount(n) {
	return (typeof n === 'number' && isFinite(n)) ? String(n) : '-';
}

var DIFFICULTY_SUFFIXES = [ '', 'K', 'M', 'G', 'T', 'P', 'E' ];

/* Exact below a million (miners show 65536 as is), then 3 significant digits. */
function formatDifficulty(n) {
	if (typeof n !== 'number' || !isFinite(n) || n < 0)
		return '-';
	if (n < 1e6)
		return String(Math.round(n * 1000) / 1000);
	var unit = 0;
	while (n >= 1000 && unit < DIFFICULTY_SUFFIXES.length - 1) {
		n /= 1000;
		unit++;
	}
	return n.toPrecision(3) + DIFFICULTY_SUFFIXES[unit];
}

function rejectPercent(accepted, rejected) {
	var total = (accepted || 0) + (rejected || 0);
	if (total === 0)
		return '-';
	return (100 * (rejected || 0) / total).toFixed(2) + '%';
}

function text(value) {
	/* Wrapping in an array makes dom/E() add a text node, not markup. */
	return [ value == null ? '-' : String(value) ];
}

function stateLabel(state) {
	switch (state) {
	case 'up': return E('span', { 'class': 'btcagent-state-up', 'style': 'color:#2a7d2a;font-weight:bold' }, _('Up'));
	case 'connecting': return E('span', { 'class': 'btcagent-state-connecting', 'style': 'color:#a06000' }, _('Connecting'));
	case 'down': return E('span', { 'class': 'btcagent-state-down', 'style': 'color:#c00000;font-weight:bold' }, _('Down'));
	default: return E('span', {}, text(state));
	}
}

/* Worker table columns: key names the field, kind picks the comparison. */
var WORKER_COLUMNS = [
	{ key: 'worker', title: _('Worker'), kind: 'text' },
	{ key: 'subaccount', title: _('Sub-account'), kind: 'text' },
	{ key: 'ip', title: _('IP address'), kind: 'ip' },
	{ key: 'difficulty', title: _('Difficulty'), kind: 'number' },
	{ key: 'last_share_age_seconds', title: _('Last share'), kind: 'age' },
	{ key: 'shares_accepted', title: _('Accepted'), kind: 'number' },
	{ key: 'shares_rejected', title: _('Rejected'), kind: 'number' },
	{ key: 'hashrate', title: _('Hashrate'), kind: 'number' }
];

function ipSortKey(ip) {
	var parts = String(ip || '').split('.');
	if (parts.length !== 4)
		return String(ip || '');
	return parts.map(function(p) { return ('000' + p).slice(-3); }).join('.');
}

function compareWorkers(column, a, b) {
	var x = a[column.key], y = b[column.key];
	switch (column.kind) {
	case 'number':
	case 'age':
		/* Missing values (never shared) sort after every real value. */
		var xn = (typeof x === 'number' && isFinite(x)) ? x : Infinity;
		var yn = (typeof y === 'number' && isFinite(y)) ? y : Infinity;
		return xn < yn ? -1 : (xn > yn ? 1 : 0);
	case 'ip':
		x = ipSortKey(x); y = ipSortKey(y);
		break;
	default:
		x = String(x == null ? '' : x).toLowerCase();
		y = String(y == null ? '' : y).toLowerCase();
	}
	return x < y ? -1 : (x > y ? 1 : 0);
}

/* ---- history charts: SVG drawn here, no chart library on the router ---- */

var SVG_NS = 'http://www.w3.org/2000/svg';
var CHART_MAX_W = 720, CHART_H = 200;

/* Drawn at the width it is shown (up to 720 px), so its text stays readable on a phone. */
function chartWidth() {
	var w = (window.innerWidth || CHART_MAX_W) - 40;
	return Math.max(300, Math.min(CHART_MAX_W, w));
}
var PLOT = { left: 64, right: 8, top: 10, bottom: 24 };
/* Farm first (dark), then one colour per sub-account, repeating past eight. */
var SERIES_COLOURS = [ '#1f5fa8', '#d9822b', '#2a9d8f', '#8e44ad', '#c0392b', '#7f8c2b', '#e84393', '#16a085' ];
var EVENT_COLOURS = { up: '#2a7d2a', down: '#c00000', dial_failed: '#d08a00' };
/* Offline workers listed at most (the agent keeps 1000). */
var MAX_OFFLINE_ROWS = 1000;
var MAX_EVENT_ROWS = 10;

/* An SVG element; children that are strings become text nodes, never markup. */
function svg(tag, attrs, children) {
	var el = document.createElementNS(SVG_NS, tag);
	for (var k in attrs)
		if (attrs[k] != null)
			el.setAttribute(k, String(attrs[k]));
	(children || []).forEach(function(c) {
		el.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
	});
	return el;
}

function validPoints(points) {
	return (Array.isArray(points) ? points : []).filter(function(p) {
		return Array.isArray(p) && p.length >= 4 && typeof p[0] === 'number' && isFinite(p[0]);
	});
}

function num(v) {
	return (typeof v === 'number' && isFinite(v) && v > 0) ? v : 0;
}

function clockLabel(t, withDate) {
	var d = new Date(t * 1000);
	var hm = ('0' + d.getHours()).slice(-2) + ':' + ('0' + d.getMinutes()).slice(-2);
	return withDate ? (d.getMonth() + 1) + '/' + d.getDate() + ' ' + hm : hm;
}

/* A 1, 2 or 5 times a power of ten at or above v / 4, for four grid lines. */
function niceStep(max) {
	var raw = max / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
	return [ 1, 2, 5, 10 ].map(function(m) { return m * p; }).filter(function(s) { return s >= raw; })[0];
}

/*
 * A chart of bucketed values over [from, to] (Unix seconds): lines (one per
 * series, broken where a bucket is missing) or, with opts.bars, stacked bars;
 * pool events as vertical marks on the same axis.
 */
function drawChart(opts) {
	var from = opts.from, to = opts.to, width = opts.bucket;
	var CHART_W = chartWidth();
	var pw = CHART_W - PLOT.left - PLOT.right, ph = CHART_H - PLOT.top - PLOT.bottom;
	var max = 0;
	opts.series.forEach(function(s) {
		s.values.forEach(function(v) { max = Math.max(max, opts.bars ? v.total : v.y); });
	});
	var step = max > 0 ? niceStep(max) : 1;
	var top = max > 0 ? Math.ceil(max / step) * step : 4;
	if (max <= 0)
		step = 1;
	var x = function(t) { return PLOT.left + pw * Math.min(Math.max((t - from) / (to - from), 0), 1); };
	var y = function(v) { return PLOT.top + ph * (1 - v / top); };
	var nodes = [];

	for (var g = 0; g <= top + 1e-9 * top; g += step) {
		nodes.push(svg('line', { x1: PLOT.left, x2: CHART_W - PLOT.right, y1: y(g), y2: y(g),
			stroke: '#ddd', 'stroke-width': 1 }));
		nodes.push(svg('text', { x: PLOT.left - 4, y: y(g) + 4, 'text-anchor': 'end', 'font-size': 11,
			fill: '#555' }, [ opts.format(g) ]));
	}
	/* Fewer time labels on a narrow chart. */
	var tick = opts.tick * (CHART_W < 500 ? 2 : 1);
	for (var t = Math.ceil(from / tick) * tick; t <= to; t += tick) {
		nodes.push(svg('line', { x1: x(t), x2: x(t), y1: PLOT.top, y2: PLOT.top + ph, stroke: '#eee' }));
		nodes.push(svg('text', { x: x(t), y: CHART_H - 6, 'text-anchor': 'middle', 'font-size': 11, fill: '#555' },
			[ clockLabel(t, tick >= 6 * 3600) ]));
	}

	(opts.events || []).forEach(function(e) {
		if (typeof e.at !== 'number' || e.at < from || e.at > to)
			return;
		var colour = EVENT_COLOURS[e.event] || '#777';
		var label = '%s %s %s/%s%s'.format(clockLabel(e.at, true), eventLabel(e.event), e.pool, e.subaccount,
			e.reason ? ': ' + e.reason : '');
		nodes.push(svg('line', { 'class': 'btcagent-event-mark', 'data-event': e.event,
			x1: x(e.at), x2: x(e.at), y1: PLOT.top, y2: PLOT.top + ph,
			stroke: colour, 'stroke-width': 2, 'stroke-dasharray': e.event === 'up' ? null : '4 3' },
			[ svg('title', {}, [ label ]) ]));
	});

	if (opts.bars) {
		var bw = Math.max(pw * width / (to - from) - 1, 1);
		opts.series.forEach(function(s) {
			s.values.forEach(function(v) {
				var base = 0;
				v.parts.forEach(function(part, i) {
					if (part <= 0)
						return;
					nodes.push(svg('rect', { 'class': 'btcagent-bar', x: x(v.t), y: y(base + part),
						width: bw, height: Math.max(y(base) - y(base + part), 0.5), fill: opts.colours[i] }));
					base += part;
				});
			});
		});
	}
	else {
		opts.series.forEach(function(s) {
			var d = '', last = null;
			s.values.forEach(function(v) {
				/* The line stands at the middle of its bucket; a missing bucket breaks it. */
				var px = x(Math.min(v.t + width / 2, to)), py = y(v.y);
				d += (last != null && v.t - last <= width ? 'L' : 'M') + px.toFixed(1) + ' ' + py.toFixed(1) + ' ';
				last = v.t;
			});
			if (d)
				nodes.push(svg('path', { 'class': 'btcagent-series', 'data-series': s.name, d: d.trim(), fill: 'none',
					stroke: s.colour, 'stroke-width': s.farm ? 2.5 : 1.5, 'stroke-linejoin': 'round' },
					[ svg('title', {}, [ s.label ]) ]));
		});
	}
	nodes.push(svg('rect', { x: PLOT.left, y: PLOT.top, width: pw, height: ph, fill: 'none', stroke: '#999' }));

	return svg('svg', { 'class': 'btcagent-chart ' + opts.cls, viewBox: '0 0 %d %d'.format(CHART_W, CHART_H),
		width: '100%', role: 'img', 'aria-label': opts.title,
		style: 'max-width:%dpx;height:auto;display:block'.format(CHART_W) }, nodes);
}

function legend(items) {
	return E('div', { 'class': 'btcagent-legend', 'style': 'display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 12px;font-size:90%' },
		items.map(function(i) {
			return E('span', { 'class': 'btcagent-legend-item', 'style': 'white-space:nowrap' }, [
				E('span', { 'style': 'display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:4px;background:' + i.colour }),
				i.label
			]);
		}));
}

function eventLabel(event) {
	switch (event) {
	case 'up': return _('connection up');
	case 'down': return _('connection lost');
	case 'dial_failed': return _('dial failed');
	default: return String(event);
	}
}

return view.extend({
	sortKey: 'worker',
	sortDescending: false,
	lastStatus: null,
	lastRunning: null,

	load: function() {
		return Promise.all([
			this.fetchState(),
			L.resolveDefault(uci.load('btcagent'), null)
		]);
	},

	/* Resolves to { running, status, error } and never rejects. */
	fetchState: function() {
		return Promise.all([
			L.resolveDefault(callServiceList('btcagent'), {}),
			L.resolveDefault(callReadFile(STATUS_PATH), null)
		]).then(function(results) {
			var svc = results[0] && results[0].btcagent;
			var state = {
				running: svc ? !!svc.running : null,
				status: null,
				error: null
			};
			if (results[1] == null || results[1] === '')
				return state;
			try {
				var doc = JSON.parse(results[1]);
				if (doc == null || typeof doc !== 'object' || Array.isArray(doc))
					throw new Error(_('not a JSON object'));
				state.status = doc;
			}
			catch (e) {
				state.error = e.message;
			}
			return state;
		});
	},

	renderService: function(state) {
		var st = state.status;
		var rows = [];
		var running;

		if (state.running === true)
			running = E('span', { 'class': 'btcagent-running', 'style': 'color:#2a7d2a;font-weight:bold' }, _('Running'));
		else if (state.running === false)
			running = E('span', { 'class': 'btcagent-not-running', 'style': 'color:#c00000;font-weight:bold' }, _('Not running'));
		else
			running = E('span', { 'class': 'btcagent-unknown' }, _('Unknown'));

		rows.push([ _('State'), running ]);
		if (st) {
			rows.push([ _('Version'), text(st.version) ]);
			rows.push([ _('Uptime'), text(formatDuration(st.uptime_seconds)) ]);
			rows.push([ _('Miners connect to'), text(st.listen) ]);
		}

		var table = E('table', { 'class': 'table btcagent-service' }, rows.map(function(r) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td left', 'width': '33%' }, r[0]),
				E('td', { 'class': 'td left' }, [ r[1] ])
			]);
		}));

		var notes = [];
		if (state.error)
			notes.push(E('p', { 'class': 'alert-message warning btcagent-bad-status' },
				_('The status file could not be read: %s').format(state.error)));
		else if (!st)
			notes.push(E('p', { 'class': 'alert-message btcagent-no-data' },
				state.running === true
					? _('BTCAgent is running but has not written any status yet. The page will update by itself.')
					: _('BTCAgent is not running, so there is no data yet. Enable it on the Settings page.')));
		else if (state.running === false)
			notes.push(E('p', { 'class': 'alert-message warning btcagent-stale' },
				_('BTCAgent is not running: the figures below are the last it wrote.')));

		var configured = uci.get('btcagent', 'main', 'status_file');
		if (configured && configured !== STATUS_PATH)
			notes.push(E('p', { 'class': 'alert-message warning' },
				_('The status file is set to %s, but this page can only read %s.').format(configured, STATUS_PATH)));

		return E('div', { 'class': 'cbi-section' }, [ E('h3', {}, _('Service')), table ].concat(notes));
	},

	renderTotals: function(st) {
		var t = (st && st.totals) || {};
		var items = [
			[ _('Miners'), formatCount(t.miners), 'miners' ],
			[ _('Pool connections up'), '%s / %s'.format(formatCount(t.pools_up), formatCount(t.pool_connections)), 'pools' ],
			[ _('Accepted, last 5 min'), formatCount(t.accepted_last_5min), 'accepted' ],
			[ _('Rejected, last 5 min'), '%s (%s)'.format(formatCount(t.rejected_last_5min),
				rejectPercent(t.accepted_last_5min, t.rejected_last_5min)), 'rejected' ],
			[ _('Estimated hashrate'), formatHashrate(t.hashrate), 'hashrate' ]
		];
		return E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, _('Farm')),
			E('table', { 'class': 'table btcagent-totals' }, items.map(function(i) {
				return E('tr', { 'class': 'tr', 'data-total': i[2] }, [
					E('td', { 'class': 'td left', 'width': '33%' }, i[0]),
					E('td', { 'class': 'td left' }, text(i[1]))
				]);
			}))
		]);
	},

	renderPools: function(st) {
		var pools = Array.isArray(st.pools) ? st.pools : [];
		var now = st.updated_at;
		var head = E('tr', { 'class': 'tr table-titles' }, [
			_('Pool'), _('Sub-account'), _('State'), _('Route'), _('Miners'), _('Since'), _('Last job'),
			_('Accepted'), _('Rejected')
		].map(function(title) { return E('th', { 'class': 'th' }, title); }));

		var rows = pools.map(function(p) {
			var since = (typeof p.since === 'number' && typeof now === 'number') ? formatAge(now - p.since) : '-';
			return E('tr', { 'class': 'tr btcagent-pool-row' }, [
				E('td', { 'class': 'td' }, text(p.pool)),
				E('td', { 'class': 'td' }, text(p.subaccount)),
				E('td', { 'class': 'td' }, [ stateLabel(p.state) ]),
				E('td', { 'class': 'td' }, text(p.route)),
				E('td', { 'class': 'td' }, text(formatCount(p.miners))),
				E('td', { 'class': 'td' }, text(since)),
				E('td', { 'class': 'td' }, text(formatAge(p.last_job_age_seconds))),
				E('td', { 'class': 'td' }, text(formatCount(p.shares_accepted))),
				E('td', { 'class': 'td' }, text(formatCount(p.shares_rejected)))
			]);
		});
		if (!rows.length)
			rows.push(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td', 'colspan': '9' }, _('No pool connections: they open when the first miner arrives.'))
			]));

		return E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, _('Pool connections')),
			E('table', { 'class': 'table btcagent-pools' }, [ head ].concat(rows))
		]);
	},

	renderSubaccounts: function(st) {
		var subs = Array.isArray(st.subaccounts) ? st.subaccounts : [];
		var head = E('tr', { 'class': 'tr table-titles' }, [
			_('Sub-account'), _('Pool connections'), _('Miners'), _('Accepted'), _('Rejected'), _('Hashrate')
		].map(function(title) { return E('th', { 'class': 'th' }, title); }));
		var rows = subs.map(function(a) {
			return E('tr', { 'class': 'tr btcagent-subaccount-row' }, [
				E('td', { 'class': 'td' }, text(a.name)),
				E('td', { 'class': 'td' }, text(formatCount(a.pool_connections))),
				E('td', { 'class': 'td' }, text(formatCount(a.miners))),
				E('td', { 'class': 'td' }, text(formatCount(a.shares_accepted))),
				E('td', { 'class': 'td' }, text(formatCount(a.shares_rejected))),
				E('td', { 'class': 'td' }, text(formatHashrate(a.hashrate)))
			]);
		});
		if (!rows.length)
			rows.push(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td', 'colspan': '6' }, _('No miners connected.'))
			]));
		return E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, _('Miners per sub-account')),
			E('table', { 'class': 'table btcagent-subaccounts' }, [ head ].concat(rows))
		]);
	},

	handleSort: function(key, ev) {
		if (this.sortKey === key)
			this.sortDescending = !this.sortDescending;
		else {
			this.sortKey = key;
			/* Numbers are most useful largest first; names A to Z. */
			var column = WORKER_COLUMNS.filter(function(c) { return c.key === key; })[0];
			this.sortDescending = column != null && column.kind === 'number';
		}
		this.redraw();
	},

	renderWorkers: function(st) {
		var self = this;
		var miners = Array.isArray(st.miners) ? st.miners.slice() : [];
		var column = WORKER_COLUMNS.filter(function(c) { return c.key === self.sortKey; })[0] || WORKER_COLUMNS[0];
		var sign = this.sortDescending ? -1 : 1;

		miners.sort(function(a, b) {
			var r = compareWorkers(column, a || {}, b || {});
			/* Missing numbers stay at the bottom whichever way the column is sorted. */
			if (column.kind === 'number' || column.kind === 'age') {
				var am = typeof (a || {})[column.key] !== 'number', bm = typeof (b || {})[column.key] !== 'number';
				if (am !== bm)
					return am ? 1 : -1;
			}
			return r * sign || compareWorkers(WORKER_COLUMNS[0], a || {}, b || {});
		});

		var head = E('tr', { 'class': 'tr table-titles' }, WORKER_COLUMNS.map(function(c) {
			var arrow = (c.key === self.sortKey) ? (self.sortDescending ? ' \u25bc' : ' \u25b2') : '';
			return E('th', {
				'class': 'th btcagent-sortable',
				'data-sort-key': c.key,
				'style': 'cursor:pointer;user-select:none',
				'title': _('Click to sort'),
				'click': L.bind(self.handleSort, self, c.key)
			}, [ c.title + arrow ]);
		}));

		var shown = miners.slice(0, MAX_WORKER_ROWS);
		var rows = shown.map(function(w) {
			w = w || {};
			return E('tr', { 'class': 'tr btcagent-worker-row' }, [
				E('td', { 'class': 'td' }, text(w.worker)),
				E('td', { 'class': 'td' }, text(w.subaccount)),
				E('td', { 'class': 'td' }, text(w.ip)),
				E('td', { 'class': 'td' }, text(formatDifficulty(w.difficulty))),
				E('td', { 'class': 'td' }, text(formatAge(w.last_share_age_seconds))),
				E('td', { 'class': 'td' }, text(formatCount(w.shares_accepted))),
				E('td', { 'class': 'td' }, text(formatCount(w.shares_rejected))),
				E('td', { 'class': 'td' }, text(formatHashrate(w.hashrate)))
			]);
		});
		if (!rows.length)
			rows.push(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td', 'colspan': String(WORKER_COLUMNS.length) }, _('No miners connected.'))
			]));

		var children = [
			E('h3', {}, _('Workers (%d)').format(miners.length)),
			E('table', { 'class': 'table btcagent-workers' }, [ head ].concat(rows))
		];
		if (miners.length > shown.length)
			children.push(E('p', { 'class': 'btcagent-truncated' },
				_('Showing the first %d of %d workers in this order.').format(shown.length, miners.length)));
		return E('div', { 'class': 'cbi-section' }, children);
	},

	historySpan: 'minutes',

	handleSpan: function(span, ev) {
		this.historySpan = span;
		this.redraw();
	},

	renderHistory: function(st) {
		var self = this;
		var history = (st.history && typeof st.history === 'object') ? st.history : {};
		var spanKey = this.historySpan;
		var span = (history[spanKey] && typeof history[spanKey] === 'object') ? history[spanKey] : {};
		var bucket = spanKey === 'minutes' ? 60 : 600;
		var to = typeof st.updated_at === 'number' ? st.updated_at : Date.now() / 1000;
		var from = to - (spanKey === 'minutes' ? 3600 : 86400);

		var buttons = E('div', { 'class': 'btcagent-span-switch', 'style': 'margin-bottom:6px' }, [
			[ 'minutes', _('Last hour') ], [ 'ten_minutes', _('Last 24 hours') ]
		].map(function(b) {
			var attrs = {
				'class': 'cbi-button',
				'data-span': b[0],
				'click': L.bind(self.handleSpan, self, b[0])
			};
			if (b[0] === spanKey) {
				attrs['class'] += ' cbi-button-action btcagent-span-active';
				attrs['style'] = 'font-weight:bold;border-width:2px';
			}
			return E('button', attrs, b[1]);
		}));

		var farm = validPoints(span.farm);
		var children = [ E('h3', {}, _('History')), buttons ];
		if (!farm.length) {
			children.push(E('p', { 'class': 'btcagent-no-history' },
				_('No history yet: the agent keeps it from its first minute of running.')));
			return E('div', { 'class': 'cbi-section btcagent-history' }, children);
		}
		/* A sub-account's missing bucket while the farm's exists: none of its miners was on. */
		var farmTimes = farm.map(function(p) { return p[0]; });
		var subs = (span.subaccounts && typeof span.subaccounts === 'object') ? Object.keys(span.subaccounts).sort() : [];
		var series = [ { name: '', farm: true, label: _('Farm'), colour: SERIES_COLOURS[0],
			values: farm.map(function(p) { return { t: p[0], y: num(p[3]) }; }) } ];
		subs.forEach(function(name, i) {
			var byTime = {};
			validPoints(span.subaccounts[name]).forEach(function(p) { byTime[p[0]] = p; });
			series.push({ name: name, label: name, colour: SERIES_COLOURS[1 + i % (SERIES_COLOURS.length - 1)],
				values: farmTimes.map(function(t) { return { t: t, y: byTime[t] ? num(byTime[t][3]) : 0 }; }) });
		});
		var events = Array.isArray(st.pool_events) ? st.pool_events.filter(function(e) { return e && typeof e === 'object'; }) : [];
		var tick = spanKey === 'minutes' ? 900 : 6 * 3600;

		children.push(E('h4', {}, _('Hashrate')));
		children.push(drawChart({ cls: 'btcagent-chart-hashrate', title: _('Hashrate'), from: from, to: to,
			bucket: bucket, tick: tick, series: series, events: events, format: formatHashrate }));
		children.push(legend(series.map(function(s) { return { colour: s.colour, label: s.label }; }).concat(
			[ { colour: EVENT_COLOURS.up, label: eventLabel('up') }, { colour: EVENT_COLOURS.down, label: eventLabel('down') },
			  { colour: EVENT_COLOURS.dial_failed, label: eventLabel('dial_failed') } ])));

		var shareColours = [ '#4a9a4a', '#c00000' ];
		children.push(E('h4', {}, _('Shares per bucket')));
		children.push(drawChart({ cls: 'btcagent-chart-shares', title: _('Shares per bucket'), from: from, to: to,
			bucket: bucket, tick: tick, bars: true, colours: shareColours, events: events,
			format: function(v) { return String(Math.round(v)); },
			series: [ { values: farm.map(function(p) {
				var a = num(p[1]), r = num(p[2]);
				return { t: p[0], parts: [ a, r ], total: a + r };
			}) } ] }));
		children.push(legend([ { colour: shareColours[0], label: _('Accepted') }, { colour: shareColours[1], label: _('Rejected') } ]));
		return E('div', { 'class': 'cbi-section btcagent-history' }, children);
	},

	renderPoolEvents: function(st) {
		var events = Array.isArray(st.pool_events) ? st.pool_events.filter(function(e) { return e && typeof e === 'object'; }) : [];
		if (!events.length)
			return E('div', {});
		var now = st.updated_at;
		var head = E('tr', { 'class': 'tr table-titles' }, [
			_('When'), _('Event'), _('Pool'), _('Sub-account'), _('Reason')
		].map(function(title) { return E('th', { 'class': 'th' }, title); }));
		var rows = events.slice(0, MAX_EVENT_ROWS).map(function(e) {
			var when = (typeof e.last_at === 'number' && typeof now === 'number') ? formatAge(now - e.last_at) : '-';
			var what = eventLabel(e.event) + (e.count > 1 ? ' \u00d7' + e.count : '');
			return E('tr', { 'class': 'tr btcagent-event-row', 'data-event': String(e.event) }, [
				E('td', { 'class': 'td' }, text(when)),
				E('td', { 'class': 'td', 'style': 'color:' + (EVENT_COLOURS[e.event] || 'inherit') }, text(what)),
				E('td', { 'class': 'td' }, text(e.pool)),
				E('td', { 'class': 'td' }, text(e.subaccount)),
				E('td', { 'class': 'td' }, text(e.reason || ''))
			]);
		});
		return E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, _('Pool events')),
			E('table', { 'class': 'table btcagent-events' }, [ head ].concat(rows))
		]);
	},

	renderOffline: function(st) {
		var offline = Array.isArray(st.offline_workers)
			? st.offline_workers.filter(function(w) { return w && typeof w === 'object'; }).slice() : [];
		/* Newest first, whatever order the file has. */
		offline.sort(function(a, b) { return (num(b.last_seen) - num(a.last_seen)) || compareWorkers(WORKER_COLUMNS[0], a, b); });
		var now = st.updated_at;
		var head = E('tr', { 'class': 'tr table-titles' }, [
			_('Worker'), _('Sub-account'), _('IP address'), _('Last seen'), _('Last hashrate')
		].map(function(title) { return E('th', { 'class': 'th' }, title); }));
		var rows = offline.slice(0, MAX_OFFLINE_ROWS).map(function(w) {
			var seen = (typeof w.last_seen === 'number' && typeof now === 'number') ? formatAge(now - w.last_seen) : '-';
			return E('tr', { 'class': 'tr btcagent-offline-row' }, [
				E('td', { 'class': 'td' }, text(w.worker)),
				E('td', { 'class': 'td' }, text(w.subaccount)),
				E('td', { 'class': 'td' }, text(w.ip)),
				E('td', { 'class': 'td' }, text(seen)),
				E('td', { 'class': 'td' }, text(formatHashrate(w.last_hashrate)))
			]);
		});
		if (!rows.length)
			rows.push(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td', 'colspan': '5' }, _('No worker went offline in the last 24 hours.'))
			]));
		return E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, _('Offline workers (%d)').format(offline.length)),
			E('div', { 'class': 'cbi-map-descr' }, _('Seen in the last 24 hours, not connected now; the most recent first.')),
			E('table', { 'class': 'table btcagent-offline' }, [ head ].concat(rows))
		]);
	},

	renderBody: function(state) {
		var parts = [ this.renderService(state) ];
		if (state.status) {
			parts.push(this.renderTotals(state.status));
			parts.push(this.renderHistory(state.status));
			parts.push(this.renderPools(state.status));
			parts.push(this.renderPoolEvents(state.status));
			parts.push(this.renderSubaccounts(state.status));
			parts.push(this.renderWorkers(state.status));
			parts.push(this.renderOffline(state.status));
		}
		return parts;
	},

	redraw: function() {
		if (this.container && this.lastState)
			dom.content(this.container, this.renderBody(this.lastState));
	},

	update: function(state) {
		this.lastState = state;
		this.redraw();
	},

	render: function(data) {
		var self = this;
		this.lastState = data[0];
		this.container = E('div', { 'id': 'btcagent-status' }, this.renderBody(this.lastState));

		poll.add(function() {
			return self.fetchState().then(L.bind(self.update, self));
		}, POLL_SECONDS);

		return E('div', {}, [
			E('h2', {}, _('BTCAgent farm status')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Refreshes every %d seconds. Hashrates are estimated from accepted shares.').format(POLL_SECONDS)),
			this.container
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
