/*
 * Stand-in for LuCI's `form` and `view` modules: Map, NamedSection,
 * TypedSection, GridSection, Value, Flag, ListValue, DynamicList and
 * SectionValue, rendering real <input>/<select> elements with LuCI-like ids
 * (widget.cbid.<config>.<section>.<option>) so tests can type into them.
 * Validation runs the option's validate(section_id, value) on every input,
 * as LuCI does, and shows the message in a .cbi-value-error element.
 */
'use strict';

(function() {
	var M = window.__modules, dom = M.dom, uci = M.uci, S = window.__standin;
	var E = window.E;

	function isEmpty(v) { return v == null || v === '' || (Array.isArray(v) && !v.length); }
	function cbid(map, sid, opt) { return 'cbid.' + map.config + '.' + sid + '.' + opt; }

	/* ---------- options ---------- */
	var AbstractValue = S.BaseClass.extend({
		__init__: function(map, section, option, title, description) {
			this.map = map;
			this.section = section;
			this.option = option;
			this.title = title || '';
			this.description = description || '';
			this.deps = [];
			this.rmempty = true;
			this.optional = false;
			/* As form.js: an option hidden by depends() is deleted on save unless retained. */
			this.retain = false;
			this.widgets = {};
		},
		depends: function(field, value) {
			var d = {};
			if (typeof field === 'object') d = field; else d[field] = value;
			this.deps.push(d);
		},
		/* The stored value, null when absent; widgets show this.default then. */
		cfgvalue: function(sid) {
			return uci.get(this.map.config, sid, this.option);
		},
		shownvalue: function(sid) {
			var v = this.cfgvalue(sid);
			return v == null ? this.default : v;
		},
		formvalue: function(sid) {
			var w = this.widgets[sid];
			return w ? w.getValue() : this.cfgvalue(sid);
		},
		/* Returns an error message, or null when valid. */
		checkValue: function(sid, value) {
			if (typeof this.validate !== 'function')
				return null;
			var r = this.validate(sid, value);
			return r === true ? null : String(r);
		},
		isActive: function(sid) {
			if (!this.deps.length)
				return true;
			var self = this;
			return this.deps.some(function(d) {
				return Object.keys(d).every(function(k) {
					var other = self.section.optionByName(k);
					var v = other ? other.formvalue(sid) : uci.get(self.map.config, sid, k);
					return String(v == null ? '' : v) === String(d[k]);
				});
			});
		},
		showError: function(sid, msg, input) {
			var w = this.widgets[sid];
			var box = w.errorBox;
			(input || w.input).classList.toggle('cbi-input-invalid', msg != null);
			box.textContent = msg || '';
			box.style.display = msg ? '' : 'none';
		},
		/* Validation of the value as it will be saved, as form.js parse() does it. */
		problems: function(sid) {
			if (!this.isActive(sid))
				return [];
			var v = this.formvalue(sid);
			var err = this.checkValue(sid, v);
			if (!err && isEmpty(v) && !(this.rmempty || this.optional))
				err = 'must not be empty';
			return err ? [ err ] : [];
		},
		/* form.js AbstractValue.parse(): an empty value removes the option, a
		 * changed one is written, a hidden one is removed unless retained. */
		write: function(sid) {
			if (!this.isActive(sid)) {
				if (!this.retain)
					uci.unset(this.map.config, sid, this.option);
				return;
			}
			var v = this.formvalue(sid), cur = this.cfgvalue(sid);
			if (isEmpty(v))
				uci.unset(this.map.config, sid, this.option);
			else if (JSON.stringify(v) !== JSON.stringify(cur))
				uci.set(this.map.config, sid, this.option, v);
		},
		renderFrame: function(sid, widget) {
			var self = this;
			var errorBox = E('div', { 'class': 'cbi-value-error', 'style': 'display:none' });
			widget.errorBox = errorBox;
			this.widgets[sid] = widget;
			var row = E('div', { 'class': 'cbi-value', 'data-name': this.option, 'id': 'cbi-' + this.map.config + '-' + sid + '-' + this.option }, [
				E('label', { 'class': 'cbi-value-title', 'for': 'widget.' + cbid(this.map, sid, this.option) }, [ this.title ]),
				E('div', { 'class': 'cbi-value-field' }, [
					widget.node,
					errorBox,
					this.description ? E('div', { 'class': 'cbi-value-description' }, this.description) : ''
				])
			]);
			widget.row = row;
			widget.onchange = function() {
				self.section.refreshDepends(sid);
			};
			return row;
		}
	});

	var Value = AbstractValue.extend({
		renderWidget: function(sid) {
			var self = this;
			var v = this.shownvalue(sid);
			var input = E('input', {
				'type': this.password ? 'password' : 'text',
				'class': 'cbi-input-text',
				'id': 'widget.' + cbid(this.map, sid, this.option),
				'placeholder': this.placeholder || ''
			});
			input.value = v == null ? '' : String(v);
			var widget = { node: input, input: input, getValue: function() { return input.value; } };
			input.addEventListener('input', function() {
				self.showError(sid, self.checkValue(sid, input.value));
				widget.onchange();
			});
			return widget;
		},
		render: function(sid) { return this.renderFrame(sid, this.renderWidget(sid)); }
	});

	var Flag = AbstractValue.extend({
		__init__: function() {
			AbstractValue.prototype.__init__.apply(this, arguments);
			this.enabled = '1';
			this.disabled = '0';
			/* As form.js: unchecked when absent, unless the view sets o.default. */
			this.default = this.disabled;
		},
		/* form.js Flag.parse(): written whenever shown (removed when equal to the
		 * default only with rmempty), removed when hidden unless retained. */
		write: function(sid) {
			if (!this.isActive(sid)) {
				if (!this.retain)
					uci.unset(this.map.config, sid, this.option);
				return;
			}
			var v = this.formvalue(sid);
			if (v == this.default && (this.optional || this.rmempty))
				uci.unset(this.map.config, sid, this.option);
			else
				uci.set(this.map.config, sid, this.option, v);
		},
		render: function(sid) {
			var self = this;
			var input = E('input', { 'type': 'checkbox', 'class': 'cbi-input-checkbox', 'id': 'widget.' + cbid(this.map, sid, this.option) });
			input.checked = String(this.shownvalue(sid)) === this.enabled;
			var widget = { node: input, input: input, getValue: function() { return input.checked ? self.enabled : self.disabled; } };
			input.addEventListener('change', function() { widget.onchange(); });
			return this.renderFrame(sid, widget);
		}
	});

	var ListValue = AbstractValue.extend({
		__init__: function() {
			AbstractValue.prototype.__init__.apply(this, arguments);
			this.keylist = [];
			this.vallist = [];
		},
		value: function(key, label) { this.keylist.push(String(key)); this.vallist.push(label != null ? label : key); },
		render: function(sid) {
			var self = this;
			var select = E('select', { 'class': 'cbi-input-select', 'id': 'widget.' + cbid(this.map, sid, this.option) },
				this.keylist.map(function(k, i) { return E('option', { 'value': k }, [ self.vallist[i] ]); }));
			var v = this.shownvalue(sid);
			if (v != null)
				select.value = String(v);
			var widget = { node: select, input: select, getValue: function() { return select.value; } };
			select.addEventListener('change', function() { widget.onchange(); });
			return this.renderFrame(sid, widget);
		}
	});

	var DynamicList = AbstractValue.extend({
		render: function(sid) {
			var self = this;
			var v = this.shownvalue(sid);
			var items = v == null ? [] : (Array.isArray(v) ? v.slice() : [ String(v) ]);
			var list = E('div', { 'class': 'cbi-dynlist', 'id': 'widget.' + cbid(this.map, sid, this.option) });
			var itemsBox = E('div', { 'class': 'cbi-dynlist-items' });
			var adder = E('input', { 'type': 'text', 'class': 'cbi-input-text cbi-dynlist-add', 'placeholder': this.placeholder || '' });
			var widget = { node: list, input: adder, getValue: function() { return items.slice(); } };

			function draw() {
				dom.content(itemsBox, items.map(function(it, i) {
					return E('div', { 'class': 'item', 'data-value': it }, [
						E('span', {}, [ it ]),
						E('button', { 'class': 'cbi-button cbi-button-remove', 'type': 'button', 'click': function() {
							items.splice(i, 1); draw();
						} }, [ '\u00d7' ])
					]);
				}));
			}
			function add() {
				var val = adder.value.trim();
				if (val === '')
					return;
				var err = self.checkValue(sid, val);
				self.showError(sid, err, adder);
				if (err)
					return;
				items.push(val);
				adder.value = '';
				draw();
			}
			adder.addEventListener('input', function() { self.showError(sid, self.checkValue(sid, adder.value.trim() || null), adder); });
			adder.addEventListener('keydown', function(ev) { if (ev.key === 'Enter') { ev.preventDefault(); add(); } });
			dom.append(list, [ itemsBox, E('div', { 'class': 'add-item' }, [
				adder, E('button', { 'class': 'cbi-button cbi-button-add', 'type': 'button', 'click': add }, [ '+' ])
			]) ]);
			draw();
			return this.renderFrame(sid, widget);
		},
		problems: function(sid) {
			if (!this.isActive(sid))
				return [];
			var self = this;
			return this.formvalue(sid).map(function(v) { return self.checkValue(sid, v); }).filter(Boolean);
		}
	});

	var SectionValue = AbstractValue.extend({
		__init__: function(map, section, option, cls) {
			AbstractValue.prototype.__init__.call(this, map, section, option);
			var args = Array.prototype.slice.call(arguments, 4);
			this.subsection = new (Function.prototype.bind.apply(cls, [ null, map ].concat(args)))();
		},
		render: function() {
			var node = this.subsection.render();
			this.widgets = {};
			return E('div', { 'class': 'cbi-value cbi-sectionvalue', 'data-name': this.option }, [ node ]);
		},
		problems: function() { return this.subsection.problems(); },
		write: function() { this.subsection.write(); },
		isActive: function() { return true; },
		formvalue: function() { return null; }
	});

	/* ---------- sections ---------- */
	var AbstractSection = S.BaseClass.extend({
		__init__: function(map, sectiontype, title, description) {
			this.map = map;
			this.sectiontype = sectiontype;
			this.title = title || '';
			this.description = description || '';
			this.children = [];
			this.tabs = [];
		},
		tab: function(name, title) { this.tabs.push({ name: name, title: title }); },
		option: function(cls) {
			var args = [ null, this.map, this ].concat(Array.prototype.slice.call(arguments, 1));
			var o = new (Function.prototype.bind.apply(cls, args))();
			this.children.push(o);
			return o;
		},
		taboption: function(tab) {
			var o = this.option.apply(this, Array.prototype.slice.call(arguments, 1));
			o.tab = tab;
			return o;
		},
		optionByName: function(name) {
			return this.children.filter(function(c) { return c.option === name; })[0];
		},
		/* A table cell stays, marked inactive with its widget hidden, as form.js does. */
		refreshDepends: function(sid) {
			this.children.forEach(function(c) {
				var w = c.widgets[sid];
				if (w && w.cell) {
					w.cell.classList.toggle('inactive', !c.isActive(sid));
					w.node.style.display = c.isActive(sid) ? '' : 'none';
				}
				else if (w && w.row)
					w.row.style.display = c.isActive(sid) ? '' : 'none';
			});
		},
		problems: function() {
			var self = this, out = [];
			this.cfgsections().forEach(function(sid) {
				self.children.forEach(function(c) {
					c.problems(sid).forEach(function(p) { out.push((c.title || c.option) + ': ' + p); });
				});
			});
			return out;
		},
		write: function() {
			var self = this;
			this.cfgsections().forEach(function(sid) {
				self.children.forEach(function(c) { c.write(sid); });
			});
		},
		renderOptions: function(sid, tab) {
			return this.children.filter(function(c) { return tab == null || c.tab === tab; })
				.map(function(c) { return c.render(sid); });
		},
		renderBody: function(sid) {
			var self = this;
			if (!this.tabs.length)
				return E('div', { 'class': 'cbi-section-node' }, this.renderOptions(sid));
			var panes = this.tabs.map(function(t, i) {
				return E('div', { 'class': 'cbi-tabcontainer', 'data-tab': t.name, 'style': i ? 'display:none' : '' },
					self.renderOptions(sid, t.name));
			});
			var menu = E('ul', { 'class': 'cbi-tabmenu' }, this.tabs.map(function(t, i) {
				return E('li', { 'class': 'tabmenu-item-' + t.name + (i ? '' : ' cbi-tab'), 'data-tab': t.name }, [
					E('a', { 'href': '#', 'click': function(ev) {
						ev.preventDefault();
						panes.forEach(function(p) { p.style.display = p.getAttribute('data-tab') === t.name ? '' : 'none'; });
						Array.prototype.forEach.call(menu.children, function(li) {
							li.className = 'tabmenu-item-' + li.getAttribute('data-tab') + (li.getAttribute('data-tab') === t.name ? ' cbi-tab' : ' cbi-tab-disabled');
						});
					} }, [ t.title ])
				]);
			}));
			var node = E('div', { 'class': 'cbi-section-node cbi-section-node-tabbed' }, [ menu ].concat(panes));
			/* Depends are evaluated once every widget exists. */
			setTimeout(function() { self.refreshDepends(sid); }, 0);
			return node;
		}
	});

	var NamedSection = AbstractSection.extend({
		__init__: function(map, section_id, sectiontype, title, description) {
			AbstractSection.prototype.__init__.call(this, map, sectiontype, title, description);
			this.section = section_id;
		},
		cfgsections: function() { return [ this.section ]; },
		render: function() {
			return E('div', { 'class': 'cbi-section', 'id': 'cbi-' + this.map.config + '-' + this.section }, [
				this.title ? E('h3', {}, [ this.title ]) : '',
				this.description ? E('div', { 'class': 'cbi-section-descr' }, this.description) : '',
				this.renderBody(this.section)
			]);
		}
	});

	var TypedSection = AbstractSection.extend({
		cfgsections: function() {
			var self = this;
			return uci.sections(this.map.config, this.sectiontype)
				.map(function(s) { return s['.name']; })
				.filter(function(sid) { return !self.filter || self.filter(sid); });
		},
		render: function() {
			var self = this;
			return E('div', { 'class': 'cbi-section' }, [ this.title ? E('h3', {}, [ this.title ]) : '' ].concat(
				this.cfgsections().map(function(sid) { return self.renderBody(sid); })));
		}
	});

	/* As form.js GridSection: the table shows the options not marked modalonly (as
	 * widgets when editable), each row has Edit, which opens the row's options (all
	 * but those with modalonly === false) in a dialog on a clone of each option, as
	 * cloneOptions() does; the dialog's Save writes them and saves to uci at once (as
	 * handleModalSave() saves the modal map), then redraws the table from uci. The
	 * main Save parses only the editable, not modalonly options of the rows. Add
	 * appends a row (the real Add opens the dialog for it first). */
	var GridSection = TypedSection.extend({
		inTable: function(c) { return !c.modalonly; },
		problems: function() {
			var self = this, out = [];
			this.cfgsections().forEach(function(sid) {
				self.children.filter(function(c) { return self.inTable(c) && c.editable; }).forEach(function(c) {
					c.problems(sid).forEach(function(p) { out.push((c.title || c.option) + ': ' + p); });
				});
			});
			return out;
		},
		write: function() {
			var self = this;
			this.cfgsections().forEach(function(sid) {
				self.children.forEach(function(c) { if (self.inTable(c) && c.editable) c.write(sid); });
			});
		},
		openModal: function(sid, redraw) {
			var self = this;
			var modalMap = new Map(this.map.config);
			window.__test.maps.pop(); /* not a Map of the page: editedOptions() lists the page's */
			var ms = new NamedSection(modalMap, sid, this.sectiontype);
			modalMap.sections.push(ms);
			this.children.forEach(function(c) {
				if (c.modalonly === false) return;
				var o2 = Object.create(c);
				o2.map = modalMap;
				o2.section = ms;
				o2.widgets = {};
				ms.children.push(o2);
			});
			var errors = E('div', { 'class': 'cbi-modal-errors' });
			var modal = E('div', { 'class': 'modal cbi-modal', 'data-sid': sid }, [
				E('h4', {}, [ this.map.title ]),
				ms.renderBody(sid),
				errors,
				E('div', { 'class': 'button-row' }, [
					E('button', { 'class': 'btn cbi-button', 'type': 'button', 'click': function() { close(); } }, [ _('Dismiss') ]),
					' ',
					E('button', { 'class': 'btn cbi-button cbi-button-positive important', 'type': 'button', 'click': function() {
						var problems = ms.problems();
						dom.content(errors, problems.join('\n'));
						if (problems.length)
							return;
						ms.write();
						uci.save().then(function() { close(); redraw(); });
					} }, [ _('Save') ])
				])
			]);
			var overlay = E('div', { 'id': 'modal_overlay' }, [ modal ]);
			function close() { overlay.parentNode.removeChild(overlay); }
			document.body.appendChild(overlay);
			ms.refreshDepends(sid);
		},
		render: function() {
			var self = this;
			var container = E('div', { 'class': 'cbi-section cbi-tblsection', 'data-type': this.sectiontype });
			function draw() {
				var shown = self.children.filter(function(c) { return self.inTable(c); });
				var head = E('tr', { 'class': 'tr cbi-section-table-titles' }, shown.map(function(c) {
					return E('th', { 'class': 'th cbi-section-table-cell', 'data-name': c.option }, [ c.title ]);
				}).concat([ E('th', { 'class': 'th' }, '') ]));
				var rows = self.cfgsections().map(function(sid) {
					var tr = E('tr', { 'class': 'tr cbi-section-table-row', 'data-sid': sid }, shown.map(function(c) {
						c.render(sid);
						var w = c.widgets[sid];
						w.cell = E('td', { 'class': 'td cbi-value-field', 'data-name': c.option }, [ w.node, w.errorBox ]);
						return w.cell;
					}).concat([ E('td', { 'class': 'td cbi-section-table-cell nowrap cbi-section-actions' }, [
						E('button', { 'class': 'cbi-button cbi-button-edit', 'type': 'button', 'click': function() {
							self.openModal(sid, draw);
						} }, [ _('Edit') ]),
						self.addremove ? E('button', { 'class': 'cbi-button cbi-button-remove', 'type': 'button', 'click': function() {
							uci.remove(self.map.config, sid); draw();
						} }, [ _('Delete') ]) : ''
					]) ]));
					return tr;
				});
				dom.content(container, [
					self.title ? E('h3', {}, [ self.title ]) : '',
					self.description ? E('div', { 'class': 'cbi-section-descr' }, self.description) : '',
					E('table', { 'class': 'table cbi-section-table' }, [ head ].concat(rows)),
					self.addremove ? E('div', { 'class': 'cbi-section-create' }, [
						E('button', { 'class': 'cbi-button cbi-button-add', 'type': 'button', 'click': function() {
							uci.add(self.map.config, self.sectiontype); draw();
						} }, [ _('Add') ])
					]) : ''
				]);
				/* Depends are evaluated once every widget of a row exists. */
				self.cfgsections().forEach(function(sid) { self.refreshDepends(sid); });
			}
			draw();
			return container;
		}
	});

	/* ---------- Map ---------- */
	var Map = S.BaseClass.extend({
		__init__: function(config, title, description) {
			this.config = config;
			this.title = title || '';
			this.description = description || '';
			this.sections = [];
			(window.__test.maps = window.__test.maps || []).push(this);
		},
		section: function(cls) {
			var args = [ null, this ].concat(Array.prototype.slice.call(arguments, 1));
			var s = new (Function.prototype.bind.apply(cls, args))();
			this.sections.push(s);
			return s;
		},
		render: function() {
			var self = this;
			return uci.load(this.config).then(function() {
				return E('div', { 'class': 'cbi-map', 'id': 'cbi-' + self.config }, [
					E('h2', {}, [ self.title ]),
					E('div', { 'class': 'cbi-map-descr' }, self.description)
				].concat(self.sections.map(function(s) { return s.render(); })));
			});
		},
		/* As LuCI: [ option, section_id ] for an option of this map, or null. */
		lookupOption: function(name, section_id) {
			var found = null;
			function walk(section) {
				section.children.forEach(function(c) {
					if (c.subsection)
						walk(c.subsection);
					else if (!found && c.option === name &&
					         (section.cfgsections().indexOf(section_id) >= 0))
						found = [ c, section_id ];
				});
			}
			this.sections.forEach(walk);
			return found;
		},
		/* Rejects with the list of problems when any value is invalid. */
		save: function() {
			var problems = [];
			this.sections.forEach(function(s) { problems = problems.concat(s.problems()); });
			if (problems.length)
				return Promise.reject(problems);
			this.sections.forEach(function(s) { s.write(); });
			return uci.save();
		}
	});

	/* "section_type.option" for every option a rendered Map edits. */
	window.__test.editedOptions = function() {
		var out = [];
		function walk(section) {
			section.children.forEach(function(c) {
				if (c.subsection)
					walk(c.subsection);
				else
					out.push(section.sectiontype + '.' + c.option);
			});
		}
		(window.__test.maps || []).forEach(function(m) { m.sections.forEach(walk); });
		return out;
	};

	/* What the rule test checks of every option: widget, default, placeholder, depends, retain. */
	window.__test.optionRules = function() {
		var out = [];
		function walk(section) {
			section.children.forEach(function(c) {
				if (c.subsection)
					return walk(c.subsection);
				out.push({ name: section.sectiontype + '.' + c.option, widget: c.widgetType,
					default: c.default == null ? null : String(c.default), placeholder: c.placeholder == null ? null : String(c.placeholder),
					depends: c.deps.length, retain: !!c.retain, rmempty: !!c.rmempty });
			});
		}
		(window.__test.maps || []).forEach(function(m) { m.sections.forEach(walk); });
		return out;
	};

	Value.prototype.widgetType = 'Value';
	Flag.prototype.widgetType = 'Flag';
	ListValue.prototype.widgetType = 'ListValue';
	DynamicList.prototype.widgetType = 'DynamicList';

	M.form = {
		Map: Map, NamedSection: NamedSection, TypedSection: TypedSection, GridSection: GridSection,
		TableSection: GridSection, Value: Value, Flag: Flag, ListValue: ListValue,
		DynamicList: DynamicList, SectionValue: SectionValue
	};

	/* ---------- view ---------- */
	M.view = {
		extend: function(proto) {
			return S.BaseClass.extend(Object.assign({
				load: function() {},
				render: function() {},
				/* Like LuCI's handleSave: saves every Map the view rendered. */
				handleSave: function() {
					var maps = Array.prototype.map.call(document.querySelectorAll('.cbi-map'), function(n) { return n.__map; });
					return Promise.all(maps.filter(Boolean).map(function(m) { return m.save(); }));
				}
			}, proto));
		}
	};

	var origRender = Map.prototype.render;
	Map.prototype.render = function() {
		var self = this;
		return origRender.call(this).then(function(node) { node.__map = self; return node; });
	};
})();
