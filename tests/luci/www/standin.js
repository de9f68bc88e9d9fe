/*
 * Stand-ins for the LuCI client modules that the btcagent views use
 * (L, E, _, view, form, uci, rpc, poll, dom, ui, fs). They follow the
 * public LuCI JS API closely enough to load the REAL view files unchanged
 * and render real inputs, but they are small and only as complete as these
 * views need. State the tests drive lives on window.__test.
 */
'use strict';

(function() {
	var T = window.__test = {
		files: {},          /* path -> contents, read by rpc file.read / fs */
		services: {},       /* name -> { enabled, running } for rc.list */
		rpcLog: [],         /* every rpc call made: "object.method" */
		i18n: {},           /* msgid -> msgstr */
		uciSaved: null,     /* snapshot written by Map.save() */
		polls: [],
		errors: []
	};

	/* ---------- i18n ---------- */
	window._ = function(s) {
		return Object.prototype.hasOwnProperty.call(T.i18n, s) && T.i18n[s] !== '' ? T.i18n[s] : s;
	};

	/* The subset of LuCI's String.format the views use: %s %d %%. */
	String.prototype.format = function() {
		var args = arguments, i = 0;
		return this.replace(/%([sd%])/g, function(m, c) {
			if (c === '%')
				return '%';
			var v = args[i++];
			return c === 'd' ? String(Math.floor(+v || 0)) : String(v);
		});
	};

	/* ---------- class system (LuCI.baseclass) ---------- */
	function extend(Parent, proto) {
		function Class() {
			if (typeof this.__init__ === 'function')
				this.__init__.apply(this, arguments);
		}
		Class.prototype = Object.create(Parent.prototype);
		Object.keys(proto || {}).forEach(function(k) { Class.prototype[k] = proto[k]; });
		Class.prototype.constructor = Class;
		Class.extend = function(p) { return extend(Class, p); };
		return Class;
	}
	var BaseClass = function() {};
	BaseClass.extend = function(p) { return extend(BaseClass, p); };

	/* ---------- dom / E ---------- */
	var dom = {
		elem: function(e) { return e != null && typeof e === 'object' && 'nodeType' in e; },
		append: function(node, children) {
			if (Array.isArray(children)) {
				children.forEach(function(c) {
					if (dom.elem(c))
						node.appendChild(c);
					else if (c != null)
						node.appendChild(document.createTextNode(String(c)));
				});
			}
			else if (dom.elem(children))
				node.appendChild(children);
			else if (children != null)
				/* As in LuCI: a bare string child is markup. */
				node.innerHTML = String(children);
			return node;
		},
		content: function(node, children) {
			while (node.firstChild)
				node.removeChild(node.firstChild);
			return dom.append(node, children);
		},
		create: function(tag, attrs, children) {
			var el = document.createElement(tag);
			if (attrs != null && (typeof attrs !== 'object' || Array.isArray(attrs) || dom.elem(attrs))) {
				children = attrs;
				attrs = null;
			}
			Object.keys(attrs || {}).forEach(function(k) {
				var v = attrs[k];
				if (v == null)
					return;
				if (typeof v === 'function')
					el.addEventListener(k, v);
				else
					el.setAttribute(k, typeof v === 'object' ? JSON.stringify(v) : String(v));
			});
			return dom.append(el, children);
		},
		parent: function(node, selector) {
			return node ? node.closest(selector) : null;
		}
	};
	window.E = function() { return dom.create.apply(dom, arguments); };

	/* ---------- L ---------- */
	var L = window.L = {
		env: { sessionid: '00000000000000000000000000000000' },
		Class: BaseClass,
		dom: dom,
		bind: function(fn, self) {
			var bound = Array.prototype.slice.call(arguments, 2);
			return function() { return fn.apply(self, bound.concat(Array.prototype.slice.call(arguments))); };
		},
		resolveDefault: function(value, def) {
			return Promise.resolve(value).catch(function() { return def; });
		},
		isObject: function(v) { return v != null && typeof v === 'object'; },
		toArray: function(v) { return v == null ? [] : (Array.isArray(v) ? v : [ v ]); },
		error: function(type, msg) { var e = new Error(msg); e.name = type; throw e; }
	};

	/* ---------- uci ----------
	 * Like LuCI's uci.js: edits are kept as pending creates/changes/deletes over
	 * the loaded values, and save() turns them into the same rpcd calls in the
	 * same order (delete, add, set, order), logged on T.ubusCalls, then applies
	 * them to the data as rpcd + uci would (an empty value deletes the option).
	 * tests/luci/recordings/ holds what the real uci.js sent for the same flows. */
	function isEmptyValue(v) { return v == null || v === '' || (Array.isArray(v) && !v.length); }
	var uci = {
		data: {},
		seq: 0,
		pending: { creates: {}, changes: {}, deletes: {}, reorder: false },
		load: function(config) {
			if (!uci.data[config])
				return Promise.reject(new Error('uci: no config ' + config));
			return Promise.resolve([ config ]);
		},
		/* The sections as uci.js sees them: loaded ones less deleted, plus created. */
		view: function(config) {
			var P = uci.pending, c = uci.data[config] || {}, out = {};
			Object.keys(c).forEach(function(sid) {
				if (P.deletes[sid] === true) return;
				var s = Object.assign({}, c[sid]);
				Object.keys(P.deletes[sid] || {}).forEach(function(o) { delete s[o]; });
				Object.assign(s, P.changes[sid] || {});
				out[sid] = s;
			});
			Object.keys(P.creates).forEach(function(sid) { out[sid] = P.creates[sid]; });
			return out;
		},
		sections: function(config, type) {
			var c = uci.view(config);
			return Object.keys(c).map(function(k) { return c[k]; })
				.filter(function(s) { return type == null || s['.type'] === type; })
				.sort(function(a, b) { return a['.index'] - b['.index']; });
		},
		get: function(config, sid, opt) {
			var s = uci.view(config)[sid];
			if (!s)
				return null;
			return opt == null ? s : (s[opt] === undefined ? null : s[opt]);
		},
		set: function(config, sid, opt, value) {
			var P = uci.pending, loaded = (uci.data[config] || {})[sid];
			if (P.creates[sid]) {
				if (value != null) P.creates[sid][opt] = value; else delete P.creates[sid][opt];
			}
			else if (!isEmptyValue(value)) {
				if (!loaded || P.deletes[sid] === true) return;
				if (P.deletes[sid]) delete P.deletes[sid][opt];
				(P.changes[sid] = P.changes[sid] || {})[opt] = value;
			}
			else {
				if (P.changes[sid]) delete P.changes[sid][opt];
				if (loaded && Object.prototype.hasOwnProperty.call(loaded, opt) && P.deletes[sid] !== true)
					(P.deletes[sid] = P.deletes[sid] || {})[opt] = true;
			}
		},
		unset: function(config, sid, opt) { uci.set(config, sid, opt, null); },
		add: function(config, type) {
			var sid = 'new' + (++uci.seq);
			uci.pending.creates[sid] = { '.type': type, '.name': sid, '.anonymous': true, '.index': 1000 + uci.seq };
			return sid;
		},
		remove: function(config, sid) {
			if (uci.pending.creates[sid]) delete uci.pending.creates[sid];
			else { delete uci.pending.changes[sid]; uci.pending.deletes[sid] = true; }
		},
		move: function(config, sid, beforeSid) {
			var list = uci.sections(config);
			var moving = list.filter(function(s) { return s['.name'] === sid; })[0];
			list = list.filter(function(s) { return s !== moving; });
			var at = beforeSid ? list.map(function(s) { return s['.name']; }).indexOf(beforeSid) : list.length;
			list.splice(at < 0 ? list.length : at, 0, moving);
			list.forEach(function(s, i) {
				s['.index'] = i;
				var stored = (uci.data[config] || {})[s['.name']];
				if (stored) stored['.index'] = i;
			});
			uci.pending.reorder = true;
		},
		save: function() {
			var config = 'btcagent', P = uci.pending, c = uci.data[config], calls = [];
			var log = function(method, args) { calls.push({ object: 'uci', method: method, args: args }); };
			Object.keys(P.deletes).forEach(function(sid) {
				var d = P.deletes[sid];
				if (d === true) { log('delete', { config: config, section: sid }); delete c[sid]; return; }
				log('delete', { config: config, section: sid, options: Object.keys(d) });
				Object.keys(d).forEach(function(o) { delete c[sid][o]; });
			});
			Object.keys(P.creates).forEach(function(sid) {
				var s = P.creates[sid], values = {};
				Object.keys(s).forEach(function(k) { if (k.charAt(0) !== '.') values[k] = s[k]; });
				log('add', { config: config, type: s['.type'], values: values });
				var stored = Object.assign({}, s);
				Object.keys(values).forEach(function(k) { if (isEmptyValue(values[k])) delete stored[k]; });
				c[sid] = stored;
			});
			Object.keys(P.changes).forEach(function(sid) {
				log('set', { config: config, section: sid, values: P.changes[sid] });
				Object.keys(P.changes[sid]).forEach(function(k) { c[sid][k] = P.changes[sid][k]; });
			});
			if (P.reorder)
				log('order', { config: config, sections: uci.sections(config).map(function(s) { return s['.name']; }) });
			uci.pending = { creates: {}, changes: {}, deletes: {}, reorder: false };
			T.ubusCalls = (T.ubusCalls || []).concat(calls);
			T.uciSaved = JSON.parse(JSON.stringify(uci.data));
			return Promise.resolve();
		},
		apply: function() { return Promise.resolve(); }
	};

	/* ---------- rpc ---------- */
	function rpcBackend(object, method, args) {
		T.rpcLog.push(object + '.' + method);
		if (object === 'file' && method === 'read') {
			if (!Object.prototype.hasOwnProperty.call(T.files, args.path))
				return Promise.reject(new Error('Resource not found'));
			return Promise.resolve({ data: T.files[args.path] });
		}
		if (object === 'rc' && method === 'list') {
			var out = {};
			Object.keys(T.services).forEach(function(n) {
				if (args.name == null || args.name === n)
					out[n] = T.services[n];
			});
			return Promise.resolve(out);
		}
		return Promise.reject(new Error('Method not found: ' + object + '.' + method));
	}
	var rpc = {
		declare: function(opts) {
			return function() {
				var args = {}, values = arguments;
				(opts.params || []).forEach(function(p, i) { if (values[i] !== undefined) args[p] = values[i]; });
				return rpcBackend(opts.object, opts.method, args).then(function(reply) {
					var result = reply;
					if (opts.expect) {
						var key = Object.keys(opts.expect)[0];
						result = key === '' ? reply : reply[key];
						if (result == null)
							result = opts.expect[key];
					}
					return opts.filter ? opts.filter(result, args) : result;
				});
			};
		}
	};

	/* ---------- fs ---------- */
	var fs = {
		read: function(path) {
			return rpcBackend('file', 'read', { path: path }).then(function(r) { return r.data; });
		},
		read_direct: function(path, type) {
			return fs.read(path).then(function(d) { return type === 'json' ? JSON.parse(d) : d; });
		}
	};

	/* ---------- poll ---------- */
	var poll = {
		add: function(fn, interval) {
			var entry = { fn: fn, interval: interval || 5 };
			T.polls.push(entry);
			entry.timer = setInterval(function() {
				Promise.resolve(fn()).catch(function(e) { T.errors.push(String(e)); });
			}, entry.interval * 1000);
			return true;
		}
	};
	T.pollTick = function() {
		return Promise.all(T.polls.map(function(p) { return Promise.resolve(p.fn()); }));
	};

	/* ---------- ui ---------- */
	var ui = {
		addNotification: function(title, body) {
			var n = dom.create('div', { 'class': 'alert-message notice' }, [ title || '', ' ', body || '' ]);
			document.getElementById('notifications').appendChild(n);
			return n;
		}
	};

	window.__modules = { view: null, form: null, dom: dom, poll: poll, rpc: rpc, uci: uci, ui: ui, fs: fs };
	window.__standin = { extend: extend, BaseClass: BaseClass };
})();
