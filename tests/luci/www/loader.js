/*
 * Loads a REAL view file the way LuCI's L.require does: fetch the source,
 * read its 'require x' / 'require x as y' directives, and run the body as a
 * function of those modules. Query parameters pick the view, the language,
 * the status fixture and whether the service counts as running.
 */
'use strict';

(function() {
	var T = window.__test, M = window.__modules;
	var q = new URLSearchParams(location.search);
	var STATUS_PATH = '/var/run/btcagent/status.json';

	function fetchText(url) {
		return fetch(url).then(function(r) {
			if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
			return r.text();
		});
	}

	/* Minimal .po reader: msgid/msgstr with continued "..." lines. */
	function parsePo(text) {
		var out = {}, cur = null, field = null;
		function unq(s) { return JSON.parse(s); }
		text.split('\n').forEach(function(line) {
			var m;
			if ((m = /^msgid (".*")$/.exec(line))) { cur = { id: unq(m[1]), str: '' }; field = 'id'; }
			else if ((m = /^msgstr (".*")$/.exec(line)) && cur) { cur.str = unq(m[1]); field = 'str'; out[cur.id] = cur; }
			else if ((m = /^(".*")$/.exec(line)) && cur) { cur[field] += unq(m[1]); if (field === 'str') out[cur.id] = cur; }
		});
		var map = {};
		Object.keys(out).forEach(function(k) { if (k !== '') map[k] = out[k].str; });
		return map;
	}

	function requireView(path) {
		return fetchText('/luci-static/resources/view/' + path + '.js').then(function(src) {
			var names = [], mods = [];
			var re = /^\s*'require\s+([a-zA-Z0-9_.]+)(?:\s+as\s+([a-zA-Z0-9_]+))?';/mg, m;
			while ((m = re.exec(src)) != null) {
				if (!(m[1] in M)) throw new Error('view requires unknown module ' + m[1]);
				names.push(m[2] || m[1]);
				mods.push(M[m[1]]);
			}
			var fn = new Function(names.join(','), src + '\n//# sourceURL=/luci-static/resources/view/' + path + '.js');
			return fn.apply(window, mods);
		});
	}

	var steps = [];
	/* ?rec=FLOW&step=N: the uci values the real LuCI loaded before step N of a recorded flow. */
	steps.push(q.get('rec')
		? fetchText('/recordings/' + q.get('rec') + '.json').then(function(t) {
			M.uci.data.btcagent = JSON.parse(t).saves[+q.get('step') || 0].before;
		})
		: fetchText('/fixtures/' + (q.get('uci') || 'uci-btcagent') + '.json').then(function(t) {
			M.uci.data.btcagent = JSON.parse(t);
		}));
	if (q.get('lang'))
		steps.push(fetchText('/po/' + q.get('lang') + '/btcagent.po').then(function(t) { T.i18n = parsePo(t); }));
	if (q.get('status'))
		steps.push(fetchText('/fixtures/' + q.get('status') + '.json').then(function(t) { T.files[STATUS_PATH] = t; }));
	if (q.get('running') != null)
		T.services.btcagent = { start: 99, enabled: true, running: q.get('running') === '1' };

	Promise.all(steps).then(function() {
		return requireView(q.get('view') || 'btcagent/settings');
	}).then(function(ViewClass) {
		var v = T.viewInstance = new ViewClass();
		return Promise.resolve(v.load()).then(function(data) { return v.render(data); }).then(function(node) {
			document.getElementById('view').appendChild(node);
			if (typeof v.handleSave === 'function') {
				var out = document.getElementById('save-result');
				document.getElementById('footer-actions').appendChild(E('button', {
					'class': 'cbi-button cbi-button-save', 'id': 'btn-save', 'click': function() {
						v.handleSave().then(function() { out.textContent = 'saved'; },
							function(problems) { out.textContent = 'not saved:\n' + [].concat(problems).join('\n'); });
					} }, [ _('Save') ]));
			}
		});
	}).then(function() { T.ready = true; }, function(e) {
		T.loadError = String(e && e.stack || e);
		document.getElementById('view').textContent = 'LOAD ERROR: ' + T.loadError;
	});
	window.addEventListener('error', function(e) { T.errors.push(String(e.message)); });
})();
