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

	renderBody: function(state) {
		var parts = [ this.renderService(state) ];
		if (state.status) {
			parts.push(this.renderTotals(state.status));
			parts.push(this.renderPools(state.status));
			parts.push(this.renderSubaccounts(state.status));
			parts.push(this.renderWorkers(state.status));
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
