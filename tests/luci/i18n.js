#!/usr/bin/env node
/*
 * Translation check for luci-app-btcagent.
 *
 *   node i18n.js            check: every _('...') in the views and every menu
 *                           title is in po/templates/btcagent.pot, the pot has
 *                           no stale entries, and po/zh_Hans/btcagent.po
 *                           translates every msgid with the same %s/%d slots.
 *   node i18n.js --write-pot  regenerate the pot from the sources.
 *
 * Exports the same functions for test.js.
 */
'use strict';

const fs = require('fs');
const path = require('path');

const APP = path.resolve(__dirname, '../../luci-app-btcagent');
const VIEW_DIR = path.join(APP, 'htdocs/luci-static/resources/view/btcagent');
const MENU = path.join(APP, 'root/usr/share/luci/menu.d/luci-app-btcagent.json');
const POT = path.join(APP, 'po/templates/btcagent.pot');
const PO_ZH = path.join(APP, 'po/zh_Hans/btcagent.po');

/* Decodes the body of a JS string literal. */
function unescapeJs(body) {
	return body.replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)/g, (m, e) => {
		if (e[0] === 'u' && e.length === 5) return String.fromCharCode(parseInt(e.slice(1), 16));
		if (e[0] === 'x' && e.length === 3) return String.fromCharCode(parseInt(e.slice(1), 16));
		return { n: '\n', t: '\t', r: '\r', '0': '\0' }[e] || e;
	});
}

/* msgids used by the views, in order of first use, with file:line. */
function scanSources() {
	const found = new Map();
	const files = fs.readdirSync(VIEW_DIR).filter((f) => f.endsWith('.js')).sort();
	const re = /\b_\(\s*(?:'((?:[^'\\\n]|\\.)*)'|"((?:[^"\\\n]|\\.)*)")\s*\)/g;
	for (const f of files) {
		const src = fs.readFileSync(path.join(VIEW_DIR, f), 'utf8');
		let m;
		while ((m = re.exec(src)) !== null) {
			const id = unescapeJs(m[1] !== undefined ? m[1] : m[2]);
			const line = src.slice(0, m.index).split('\n').length;
			if (!found.has(id)) found.set(id, []);
			found.get(id).push(`htdocs/luci-static/resources/view/btcagent/${f}:${line}`);
		}
		/* A _( call whose argument is not a plain literal cannot be scanned. */
		const calls = (src.match(/\b_\(/g) || []).length;
		const literal = (src.match(re) || []).length;
		if (calls !== literal) throw new Error(`${f}: ${calls - literal} _() call(s) without a plain string literal`);
	}
	const menu = JSON.parse(fs.readFileSync(MENU, 'utf8'));
	for (const node of Object.values(menu)) {
		if (node.title) {
			if (!found.has(node.title)) found.set(node.title, []);
			found.get(node.title).push('root/usr/share/luci/menu.d/luci-app-btcagent.json');
		}
	}
	return found;
}

function poQuote(s) {
	return '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n').replace(/\t/g, '\\t') + '"';
}

function poUnquote(q) {
	return q.slice(1, -1).replace(/\\(.)/g, (m, e) => ({ n: '\n', t: '\t', r: '\r' }[e] || e));
}

/* Returns Map msgid -> msgstr (header entry excluded). */
function parsePo(file) {
	const out = new Map();
	let cur = null;
	let field = null;
	const flush = () => { if (cur && cur.id !== '') out.set(cur.id, cur.str); };
	for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
		const line = raw.trim();
		let m;
		if ((m = /^msgid (".*")$/.exec(line))) { flush(); cur = { id: poUnquote(m[1]), str: '' }; field = 'id'; }
		else if ((m = /^msgstr (".*")$/.exec(line))) { if (!cur) throw new Error(`${file}: msgstr without msgid`); cur.str = poUnquote(m[1]); field = 'str'; }
		else if ((m = /^(".*")$/.exec(line))) { if (!cur) throw new Error(`${file}: stray string line`); cur[field] += poUnquote(m[1]); }
		else if (line.startsWith('msgctxt') || line.startsWith('msgid_plural')) throw new Error(`${file}: unsupported ${line.split(' ')[0]}`);
	}
	flush();
	return out;
}

function writePot() {
	const found = scanSources();
	let out = 'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8"\n';
	for (const [id, refs] of found) {
		out += '\n' + refs.map((r) => `#: ${r}`).join('\n') + `\nmsgid ${poQuote(id)}\nmsgstr ""\n`;
	}
	fs.writeFileSync(POT, out);
	return found.size;
}

function slots(s) {
	return (s.replace(/%%/g, '').match(/%[sd]/g) || []).join('');
}

/* Returns a list of problems (empty when all is well). */
function check() {
	const problems = [];
	const used = scanSources();
	const pot = parsePo(POT);
	const zh = parsePo(PO_ZH);
	for (const id of used.keys()) {
		if (!pot.has(id)) problems.push(`not in btcagent.pot: ${JSON.stringify(id)} (${used.get(id)[0]})`);
		if (!zh.has(id) || zh.get(id) === '') problems.push(`not translated in zh_Hans: ${JSON.stringify(id)}`);
		else if (slots(id) !== slots(zh.get(id))) problems.push(`zh_Hans changes the %s/%d slots of ${JSON.stringify(id)}`);
	}
	for (const id of pot.keys()) if (!used.has(id)) problems.push(`stale in btcagent.pot: ${JSON.stringify(id)}`);
	for (const id of zh.keys()) if (!used.has(id)) problems.push(`stale in zh_Hans: ${JSON.stringify(id)}`);
	return { problems, count: used.size };
}

module.exports = { scanSources, parsePo, check, writePot };

if (require.main === module) {
	if (process.argv.includes('--write-pot')) {
		console.log(`wrote ${writePot()} msgids to ${POT}`);
	} else {
		const { problems, count } = check();
		problems.forEach((p) => console.log(p));
		console.log(`${count} msgids, ${problems.length} problems`);
		process.exit(problems.length ? 1 : 0);
	}
}
