#!/usr/bin/env node
/*
 * End-to-end checks of luci-app-btcagent: the REAL view files are loaded in
 * headless Chromium on top of LuCI stand-ins (www/), served over loopback.
 * Prints one line per check and ends with "N passed, M failed".
 */
'use strict';

const fs = require('fs');
const path = require('path');
const os = require('os');
const assert = require('assert/strict');
const { chromium } = require('playwright-core');
const server = require('./server');
const i18n = require('./i18n');

const APP = path.resolve(__dirname, '../../luci-app-btcagent');
/* Screenshots; LUCI_ARTIFACTS puts them elsewhere (a temporary directory). */
const ARTIFACTS = process.env.LUCI_ARTIFACTS || path.join(__dirname, 'artifacts');
const STATUS_PATH = '/var/run/btcagent/status.json';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const checks = [];
function check(name, fn) { checks.push({ name, fn }); }

let browser, base;

async function openView(query, viewport) {
	const page = await browser.newPage();
	await page.setViewportSize(viewport || { width: 1200, height: 900 });
	const consoleErrors = [];
	page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
	page.on('pageerror', (e) => consoleErrors.push(String(e)));
	await page.goto(`${base}/?${query}`);
	await page.waitForFunction(() => window.__test && (window.__test.ready || window.__test.loadError), null, { timeout: 10000 });
	const loadError = await page.evaluate(() => window.__test.loadError || null);
	if (loadError) throw new Error('view failed to load: ' + loadError);
	page.consoleErrors = consoleErrors;
	return page;
}

async function shot(page, name) {
	fs.mkdirSync(ARTIFACTS, { recursive: true });
	await page.screenshot({ path: path.join(ARTIFACTS, name), fullPage: true });
}

function id(sid, opt) { return `[id="widget.cbid.btcagent.${sid}.${opt}"]`; }

/* Types value into an input; returns the validation message shown ('' if none). */
async function typeInto(page, selector, value) {
	await page.fill(selector, value);
	return page.evaluate((sel) => {
		const input = document.querySelector(sel);
		const box = input.closest('.cbi-value-field, td').querySelector('.cbi-value-error');
		return input.classList.contains('cbi-input-invalid') ? (box.textContent || 'invalid') : '';
	}, selector);
}

async function showTab(page, tab) {
	await page.click(`.cbi-tabmenu li[data-tab="${tab}"] a`);
}

async function columnTexts(page, table, col) {
	return page.$$eval(`table.${table} tr.tr:not(.table-titles)`, (rows, c) =>
		rows.map((r) => r.children[c].textContent), col);
}

/* ---------------- static files ---------------- */

check('menu.d JSON parses and names both views, gated by the ACL and uci config', () => {
	const menu = JSON.parse(fs.readFileSync(path.join(APP, 'root/usr/share/luci/menu.d/luci-app-btcagent.json'), 'utf8'));
	const top = menu['admin/services/btcagent'];
	assert.ok(top, 'admin/services/btcagent entry');
	assert.deepEqual(top.depends.acl, [ 'luci-app-btcagent' ]);
	assert.deepEqual(top.depends.uci, { btcagent: true });
	const views = Object.values(menu).filter((n) => n.action.type === 'view').map((n) => n.action.path).sort();
	assert.deepEqual(views, [ 'btcagent/settings', 'btcagent/status' ]);
	for (const v of views)
		assert.ok(fs.existsSync(path.join(APP, 'htdocs/luci-static/resources/view', v + '.js')), v + '.js exists');
});

check('acl.d JSON grants exactly what the pages use', () => {
	const acl = JSON.parse(fs.readFileSync(path.join(APP, 'root/usr/share/rpcd/acl.d/luci-app-btcagent.json'), 'utf8'));
	assert.deepEqual(Object.keys(acl), [ 'luci-app-btcagent' ]);
	const a = acl['luci-app-btcagent'];
	assert.deepEqual(a.read.uci, [ 'btcagent' ]);
	assert.deepEqual(a.write, { uci: [ 'btcagent' ] }, 'writes only the btcagent config');
	assert.deepEqual(a.read.file, { [STATUS_PATH]: [ 'read' ] }, 'reads only the status file');
	assert.deepEqual(a.read.ubus, { file: [ 'read' ], rc: [ 'list' ] });
	/* The status view reads exactly the path and calls exactly the methods granted. */
	const src = fs.readFileSync(path.join(APP, 'htdocs/luci-static/resources/view/btcagent/status.js'), 'utf8');
	assert.ok(src.includes(`'${STATUS_PATH}'`), 'status.js reads the granted path');
	const declared = [ ...src.matchAll(/object:\s*'([^']+)',\s*method:\s*'([^']+)'/g) ].map((m) => m[1] + '.' + m[2]).sort();
	assert.deepEqual(declared, [ 'file.read', 'rc.list' ]);
});

check('Makefile follows luci.mk conventions and builds from an external feed', () => {
	const mk = fs.readFileSync(path.join(APP, 'Makefile'), 'utf8');
	/* ../../luci.mk exists only inside the luci feed itself. */
	assert.match(mk, /^include \$\(TOPDIR\)\/feeds\/luci\/luci\.mk$/m);
	assert.match(mk, /^LUCI_TITLE:=.+/m);
	assert.match(mk, /^LUCI_DEPENDS:=.*\+btcagent\b/m);
	assert.match(mk, /^PKG_LICENSE:=\S+/m);
});

check('translations: every msgid is in the pot and translated in zh_Hans', () => {
	const { problems, count } = i18n.check();
	assert.deepEqual(problems, []);
	assert.ok(count > 50, `found ${count} msgids`);
});

/* ---------------- settings view ---------------- */

check('settings: renders all four groups and the pools table without errors', async () => {
	const page = await openView('view=btcagent/settings');
	const tabs = await page.$$eval('.cbi-tabmenu li', (l) => l.map((x) => x.getAttribute('data-tab')));
	assert.deepEqual(tabs, [ 'basic', 'workers', 'network', 'advanced' ]);
	const hosts = await page.$$eval('.cbi-tblsection[data-type="pool"] tr[data-sid] [id$=".host"]', (l) => l.map((x) => x.value));
	assert.deepEqual(hosts, [ 'us.ss.btc.com', 'eu.ss.btc.com' ]);
	assert.equal(await page.inputValue(id('main', 'agent_listen_port')), '3333');
	assert.equal(await page.isChecked(id('main', 'enabled')), true);
	await shot(page, 'settings-basic.png');
	await showTab(page, 'network');
	await shot(page, 'settings-network.png');
	await showTab(page, 'advanced');
	await shot(page, 'settings-advanced.png');
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('settings: uci-options.txt lists exactly the options the view edits', async () => {
	const page = await openView('view=btcagent/settings');
	const edited = (await page.evaluate(() => window.__test.editedOptions())).sort();
	await page.close();
	const listed = fs.readFileSync(path.join(APP, 'uci-options.txt'), 'utf8').split('\n').filter(Boolean).sort();
	assert.equal(new Set(listed).size, listed.length, 'no duplicates in uci-options.txt');
	assert.deepEqual(edited, listed);
	/* And every main option exists in the UCI fixture modelled on the package defaults. */
	const uci = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures/uci-btcagent.json'), 'utf8'));
	for (const o of listed.filter((x) => x.startsWith('btcagent.')))
		assert.ok(o.slice(9) in uci.main, `${o} in fixture`);
});

check('settings: ports 0, 70000, abc, -1, 1.5 are rejected; 1 and 65535 accepted', async () => {
	const page = await openView('view=btcagent/settings');
	const sel = id('main', 'agent_listen_port');
	for (const bad of [ '0', '70000', 'abc', '-1', '1.5' ])
		assert.notEqual(await typeInto(page, sel, bad), '', `listen port ${JSON.stringify(bad)} must be rejected`);
	/* Empty: the option is removed and the agent listens on its default, 3333. */
	assert.equal(await typeInto(page, sel, ''), '', 'an empty listen port is the default');
	assert.match(await typeInto(page, sel, '70000'), /1 to 65535/);
	for (const good of [ '1', '3334', '65535' ])
		assert.equal(await typeInto(page, sel, good), '', `listen port ${good} must be accepted`);
	const poolPort = '.cbi-tblsection tr[data-sid="cfg02f1a2"] [id$=".port"]';
	assert.notEqual(await typeInto(page, poolPort, '0'), '');
	assert.notEqual(await typeInto(page, poolPort, '70000'), '');
	assert.equal(await typeInto(page, poolPort, '443'), '');
	await page.close();
});

check('settings: pool hosts and listen address are validated', async () => {
	const page = await openView('view=btcagent/settings');
	const host = '.cbi-tblsection tr[data-sid="cfg02f1a2"] [id$=".host"]';
	for (const bad of [ 'bad host', 'pool..com', '-pool.com', '300.1.1.1', 'a:b:c', 'us.ss.btc.com:1800', '' ])
		assert.notEqual(await typeInto(page, host, bad), '', `host ${JSON.stringify(bad)} must be rejected`);
	for (const good of [ 'us.ss.btc.com', 'btc.f2pool.com', '192.0.2.5', '2001:db8::1', 'localhost' ])
		assert.equal(await typeInto(page, host, good), '', `host ${good} must be accepted`);
	const ip = id('main', 'agent_listen_ip');
	for (const bad of [ 'router.lan', '1.2.3', '::g' ])
		assert.notEqual(await typeInto(page, ip, bad), '', `listen ip ${bad} must be rejected`);
	for (const good of [ '0.0.0.0', '192.168.1.1', '::', 'fe80::1', '::ffff:192.0.2.1' ])
		assert.equal(await typeInto(page, ip, good), '', `listen ip ${good} must be accepted`);
	await page.close();
});

check('settings: proxy list rejects bad URLs and accepts socks5/http/https/system/host:port', async () => {
	const page = await openView('view=btcagent/settings');
	await showTab(page, 'network');
	const adder = '.cbi-value[data-name="proxy"] input.cbi-dynlist-add';
	const addBtn = '.cbi-value[data-name="proxy"] .cbi-button-add';
	const items = () => page.$$eval('.cbi-value[data-name="proxy"] .item', (l) => l.map((x) => x.getAttribute('data-value')));
	assert.deepEqual(await items(), [ 'socks5://user:pass@192.0.2.1:1080' ]);
	for (const bad of [ 'ftp://192.0.2.1:21', 'socks4://192.0.2.1:1080', 'socks5://192.0.2.1', 'socks5://192.0.2.1:99999',
		'socks5://user@192.0.2.1:1080', 'http://:8080', 'just words', 'proxy.lan', 'SYSTEM ',
		/* The agent refuses these too: after the host, only a final '/'. */
		'socks5://u:p@192.0.2.1:1080#x', 'http://u:p@proxy.lan:3128/path', 'http://proxy.lan:3128?q' ]) {
		assert.notEqual(await typeInto(page, adder, bad), '', `proxy ${JSON.stringify(bad)} must be rejected`);
		await page.click(addBtn);
	}
	assert.deepEqual(await items(), [ 'socks5://user:pass@192.0.2.1:1080' ], 'rejected proxies are not added');
	/* A password holds '#', '?', '/' and '@' as typed: the last '@' ends it, as in the agent. */
	const good = [ 'http://proxy.lan:3128', 'https://192.0.2.7:443', 'system', 'proxy.lan:1080', 'socks5://[2001:db8::1]:1080',
		'socks5://u:p#1@192.0.2.1:1080', 'http://u:a?b/c@d@proxy.lan:3128' ];
	for (const g of good) {
		assert.equal(await typeInto(page, adder, g), '', `proxy ${g} must be accepted`);
		await page.click(addBtn);
	}
	assert.deepEqual(await items(), [ 'socks5://user:pass@192.0.2.1:1080' ].concat(good));
	await page.close();
});

check('settings: a pool needs a sub-account only when multi-user mode is off', async () => {
	const page = await openView('view=btcagent/settings');
	const sub = '.cbi-tblsection tr[data-sid="cfg02f1a2"] [id$=".subaccount"]';
	assert.equal(await typeInto(page, sub, ''), '', 'empty is fine in multi-user mode');
	assert.notEqual(await typeInto(page, sub, 'farm 1'), '', 'spaces are not allowed');
	await page.uncheck(id('main', 'multi_user_mode'));
	assert.match(await typeInto(page, sub, ''), /with multi-user mode off/);
	assert.equal(await typeInto(page, sub, 'farm1'), '');
	await page.close();
});

check('settings: timeouts must be positive integers; share batching allows 0', async () => {
	const page = await openView('view=btcagent/settings');
	await showTab(page, 'advanced');
	for (const opt of [ 'pool_connection_dial_timeout_seconds', 'pool_connection_read_timeout_seconds', 'pool_connection_number_per_subaccount' ]) {
		for (const bad of [ '0', '-5', '1.5', 'ten' ])
			assert.notEqual(await typeInto(page, id('main', opt), bad), '', `${opt}=${bad} must be rejected`);
		assert.equal(await typeInto(page, id('main', opt), '30'), '');
	}
	assert.equal(await typeInto(page, id('main', 'submit_coalesce_ms'), '0'), '');
	assert.notEqual(await typeInto(page, id('main', 'submit_coalesce_ms'), '-1'), '');
	await page.close();
});

check('settings: options hidden until the switch they depend on is on', async () => {
	const page = await openView('view=btcagent/settings');
	await showTab(page, 'workers');
	assert.equal(await page.isVisible(id('main', 'ip_worker_name_format')), false);
	await page.check(id('main', 'use_ip_as_worker_name'));
	assert.equal(await page.isVisible(id('main', 'ip_worker_name_format')), true);
	assert.notEqual(await typeInto(page, id('main', 'ip_worker_name_format'), '{5}-{1}'), '');
	assert.equal(await typeInto(page, id('main', 'ip_worker_name_format'), 'rig-{3}-{4}'), '');
	await page.close();
});

check('settings: Save refuses invalid values and writes valid ones to uci', async () => {
	const page = await openView('view=btcagent/settings');
	await typeInto(page, id('main', 'agent_listen_port'), '70000');
	await page.click('#btn-save');
	await page.waitForFunction(() => document.getElementById('save-result').textContent !== '');
	assert.match(await page.textContent('#save-result'), /not saved:[\s\S]*Listen port: Port must be a whole number from 1 to 65535/);
	assert.equal(await page.evaluate(() => window.__test.uciSaved), null);
	await typeInto(page, id('main', 'agent_listen_port'), '3334');
	await page.click('.cbi-tblsection .cbi-section-create .cbi-button-add');
	await page.fill('.cbi-tblsection tr[data-sid="new1"] [id$=".host"]', 'cn.ss.btc.com');
	await page.fill('.cbi-tblsection tr[data-sid="new1"] [id$=".port"]', '443');
	await page.fill('.cbi-tblsection tr[data-sid="new1"] [id$=".subaccount"]', 'farm3');
	await page.evaluate(() => { document.getElementById('save-result').textContent = ''; });
	await page.click('#btn-save');
	await page.waitForFunction(() => document.getElementById('save-result').textContent !== '');
	assert.equal(await page.textContent('#save-result'), 'saved');
	const saved = await page.evaluate(() => window.__test.uciSaved.btcagent);
	assert.equal(saved.main.agent_listen_port, '3334');
	assert.deepEqual(saved.main.proxy, [ 'socks5://user:pass@192.0.2.1:1080' ]);
	assert.deepEqual([ saved.new1['.type'], saved.new1.host, saved.new1.port, saved.new1.subaccount ],
		[ 'pool', 'cn.ss.btc.com', '443', 'farm3' ]);
	await page.close();
});

check('settings: zh_Hans translation renders', async () => {
	const page = await openView('view=btcagent/settings&lang=zh_Hans');
	const body = await page.textContent('body');
	for (const s of [ '基本设置', '矿池地址', '子账户', '多用户模式' ])
		assert.ok(body.includes(s), `page shows ${s}`);
	assert.match(await typeInto(page, id('main', 'agent_listen_port'), '0'), /端口必须是 1 到 65535 之间的整数/);
	await typeInto(page, id('main', 'agent_listen_port'), '3333');
	await shot(page, 'settings-basic-zh_Hans.png');
	await page.close();
});

/* ---------------- pools of both protocols ---------------- */

const POOL = (sid, opt) => `.cbi-tblsection tr[data-sid="${sid}"] [id$=".${opt}"]`;
const MODAL = (opt) => `.cbi-modal [id$=".${opt}"]`;

async function save(page) {
	await page.evaluate(() => { document.getElementById('save-result').textContent = ''; });
	await page.click('#btn-save');
	await page.waitForFunction(() => document.getElementById('save-result').textContent !== '');
	return page.textContent('#save-result');
}

async function openEdit(page, sid) {
	await page.click(`.cbi-tblsection tr[data-sid="${sid}"] .cbi-button-edit`);
	await page.waitForSelector('.cbi-modal');
}

/* Clicks the dialog's Save; returns the problems it shows ('' once saved and closed). */
async function saveEdit(page) {
	await page.click('.cbi-modal .cbi-button-positive');
	await page.waitForFunction(() => !document.querySelector('.cbi-modal') ||
		document.querySelector('.cbi-modal .cbi-modal-errors').textContent !== '');
	return page.evaluate(() => { const m = document.querySelector('.cbi-modal'); return m ? m.querySelector('.cbi-modal-errors').textContent : ''; });
}

/* The uci calls sent so far that touch a pool section (or add one). */
async function poolCalls(page) {
	return page.evaluate(() => (window.__test.ubusCalls || []).filter((c) =>
		c.args.type === 'pool' || (c.args.section && c.args.section !== 'main') || c.method === 'order'));
}

check('settings: pools table: Protocol, host, port, sub-account or user by protocol; the rest in the edit dialog', async () => {
	const page = await openView('view=btcagent/settings&uci=uci-stratum');
	const titles = await page.$$eval('.cbi-tblsection[data-type="pool"] tr.cbi-section-table-titles th', (l) => l.map((x) => x.textContent));
	assert.deepEqual(titles, [ 'Protocol', 'Pool host', 'Pool port', 'Sub-account', 'User', '' ]);
	const protocols = await page.$$eval('.cbi-tblsection[data-type="pool"] tr[data-sid] [id$=".protocol"]', (l) => l.map((x) => x.value));
	assert.deepEqual(protocols, [ 'agent', 'stratum', 'stratum', 'agent' ], 'an absent protocol shows as the agent protocol');
	const labels = await page.$$eval(`${POOL('cfg0a1001', 'protocol')} option`, (l) => l.map((x) => [ x.value, x.textContent ]));
	assert.deepEqual(labels, [ [ 'agent', 'BTCAgent (btcpool)' ], [ 'stratum', 'Stratum V1' ] ]);
	/* Each row shows the one of sub-account and user its protocol has. */
	for (const [ sid, stratum ] of [ [ 'cfg0a1001', false ], [ 'cfg0b1002', true ], [ 'cfg0c1003', true ], [ 'cfg0d1004', false ] ]) {
		assert.equal(await page.isVisible(POOL(sid, 'subaccount')), !stratum, `${sid} sub-account`);
		assert.equal(await page.isVisible(POOL(sid, 'user')), stratum, `${sid} user`);
	}
	assert.equal(await page.inputValue(POOL('cfg0b1002', 'user')), '{sub}.farm1');
	assert.equal(await page.getAttribute(POOL('cfg0c1003', 'user'), 'placeholder'), '{sub}.farm1', 'multi-user mode is on');
	/* Password and the switch are not in the table, only in the row's dialog. */
	for (const opt of [ 'password', 'extranonce_subscribe', 'identity_passthrough' ])
		assert.equal(await page.$$eval(`.cbi-tblsection [id$=".${opt}"]`, (l) => l.length), 0, opt);
	await openEdit(page, 'cfg0b1002');
	assert.equal(await page.inputValue(MODAL('password')), 'x');
	assert.equal(await page.isChecked(MODAL('extranonce_subscribe')), true);
	assert.equal(await page.isVisible(MODAL('subaccount')), false);
	await shot(page, 'settings-pool-stratum-dialog.png');
	await page.click('.cbi-modal .button-row .cbi-button:not(.cbi-button-positive)');
	/* An agent-protocol row's dialog has no Stratum options. */
	await openEdit(page, 'cfg0a1001');
	for (const opt of [ 'user', 'password', 'extranonce_subscribe', 'identity_passthrough' ])
		assert.equal(await page.isVisible(MODAL(opt)), false, opt);
	assert.equal(await page.isVisible(MODAL('subaccount')), true);
	/* A Stratum pool with the switch absent shows the agent's default: subscribe on. */
	await page.click('.cbi-modal .button-row .cbi-button:not(.cbi-button-positive)');
	await openEdit(page, 'cfg0c1003');
	assert.equal(await page.isChecked(MODAL('extranonce_subscribe')), true);
	assert.equal(await page.getAttribute(MODAL('password'), 'placeholder'), 'x');
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('settings: plain Save leaves every pool alone, agent-protocol and Stratum alike', async () => {
	for (const fixture of [ 'uci-btcagent', 'uci-stratum' ]) {
		const page = await openView(`view=btcagent/settings&uci=${fixture}`);
		const before = JSON.parse(fs.readFileSync(path.join(__dirname, `fixtures/${fixture}.json`), 'utf8'));
		assert.equal(await save(page), 'saved', fixture);
		assert.deepEqual(await poolCalls(page), [], `${fixture}: no uci call touches a pool`);
		const saved = await page.evaluate(() => window.__test.uciSaved.btcagent);
		for (const sid of Object.keys(before).filter((k) => before[k]['.type'] === 'pool'))
			assert.deepEqual(saved[sid], before[sid], `${fixture}: ${sid} unchanged`);
		/* No protocol option is written, neither into the sections nor by a set. */
		const sets = await page.evaluate(() => (window.__test.ubusCalls || []).filter((c) => c.method === 'set'));
		assert.deepEqual(sets.map((c) => c.args.section), [ 'main' ]);
		assert.deepEqual(page.consoleErrors, []);
		await page.close();
	}
});

check('settings: switching a row to Stratum V1 shows User for Sub-account and Save deletes the sub-account', async () => {
	const page = await openView('view=btcagent/settings');
	const sid = 'cfg02f1a2';
	assert.equal(await page.isVisible(POOL(sid, 'subaccount')), true);
	assert.equal(await page.isVisible(POOL(sid, 'user')), false);
	await page.selectOption(POOL(sid, 'protocol'), 'stratum');
	assert.equal(await page.isVisible(POOL(sid, 'subaccount')), false);
	assert.equal(await page.isVisible(POOL(sid, 'user')), true);
	assert.equal(await page.getAttribute(POOL(sid, 'user'), 'placeholder'), '{sub}.farm1');
	/* The user must be given, and follow the agent's template rules. */
	assert.equal(await save(page), 'not saved:\n_pools: User: Enter the user name the pool expects, e.g. account.worker');
	assert.match(await typeInto(page, POOL(sid, 'user'), 'acct.farm1'), /With multi-user mode on, write \{sub\}/);
	assert.match(await typeInto(page, POOL(sid, 'user'), '{sub}.{worker}'), /\{worker\} needs identity pass-through \(in the row's edit dialog\): without it many miners share one pool connection and one user/);
	assert.match(await typeInto(page, POOL(sid, 'user'), '{sub}.{rig}'), /Only \{sub\} and \{worker\}/);
	assert.match(await typeInto(page, POOL(sid, 'user'), '{sub} farm'), /spaces/);
	assert.equal(await typeInto(page, POOL(sid, 'user'), '{sub}.farm1'), '');
	await shot(page, 'settings-pool-switched.png');
	assert.equal(await save(page), 'saved');
	assert.deepEqual(normalCalls(await poolCalls(page)), normalCalls([
		{ method: 'delete', args: { config: 'btcagent', section: sid, options: [ 'subaccount' ] } },
		{ method: 'set', args: { config: 'btcagent', section: sid, values: { protocol: 'stratum', user: '{sub}.farm1' } } }
	]));
	const saved = await page.evaluate((s) => window.__test.uciSaved.btcagent[s], sid);
	assert.deepEqual([ saved.protocol, saved.host, saved.port, saved.user, saved.subaccount ],
		[ 'stratum', 'us.ss.btc.com', '1800', '{sub}.farm1', undefined ]);
	await page.close();
});

check('settings: the Stratum user follows multi-user mode; {worker} is refused without identity pass-through', async () => {
	const page = await openView('view=btcagent/settings&uci=uci-stratum');
	const sid = 'cfg0c1003';
	await page.uncheck(id('main', 'multi_user_mode'));
	assert.match(await typeInto(page, POOL(sid, 'user'), '{sub}.rack2'), /\{sub\} needs multi-user mode/);
	assert.equal(await typeInto(page, POOL(sid, 'user'), 'acct.rack2'), '');
	assert.match(await typeInto(page, POOL(sid, 'user'), 'acct.{worker}'), /\{worker\} needs identity pass-through/);
	await page.check(id('main', 'multi_user_mode'));
	await openEdit(page, sid);
	await page.fill(MODAL('user'), '{sub}.{worker}');
	assert.match(await saveEdit(page), /\{worker\} needs identity pass-through/);
	await page.fill(MODAL('user'), '{sub}.rack3');
	assert.equal(await saveEdit(page), '');
	assert.deepEqual(normalCalls(await poolCalls(page)), normalCalls([
		{ method: 'set', args: { config: 'btcagent', section: sid, values: { user: '{sub}.rack3' } } }
	]));
	/* The table shows what the dialog saved. */
	assert.equal(await page.inputValue(POOL(sid, 'user')), '{sub}.rack3');
	await page.close();
});

check('settings: identity pass-through in the edit dialog: the user needs {worker} with it', async () => {
	const page = await openView('view=btcagent/settings&uci=uci-stratum');
	const sid = 'cfg0c1003';
	await openEdit(page, sid);
	assert.equal(await page.isChecked(MODAL('identity_passthrough')), false, 'off unless set');
	await page.check(MODAL('identity_passthrough'));
	await page.fill(MODAL('user'), '{sub}.rack3');
	assert.match(await saveEdit(page), /With identity pass-through, write \{worker\} where the worker name goes/);
	await page.fill(MODAL('user'), '{sub}.{worker}');
	assert.equal(await saveEdit(page), '');
	assert.deepEqual(normalCalls(await poolCalls(page)), normalCalls([
		{ method: 'set', args: { config: 'btcagent', section: sid, values: { user: '{sub}.{worker}', identity_passthrough: '1' } } }
	]));
	/* The table row knows the switch from what was saved: its {worker} is fine. */
	assert.equal(await page.inputValue(POOL(sid, 'user')), '{sub}.{worker}');
	assert.equal(await typeInto(page, POOL(sid, 'user'), '{sub}.{worker}x'), '');
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('settings: a Stratum pool added through the edit dialog gives exactly its options to uci', async () => {
	const page = await openView('view=btcagent/settings');
	await page.click('.cbi-tblsection .cbi-section-create .cbi-button-add');
	await openEdit(page, 'new1');
	assert.equal(await page.inputValue(MODAL('protocol')), 'agent', 'a new pool starts as agent protocol');
	assert.equal(await page.isVisible(MODAL('password')), false);
	await page.selectOption(MODAL('protocol'), 'stratum');
	for (const opt of [ 'user', 'password', 'extranonce_subscribe', 'identity_passthrough' ])
		assert.equal(await page.isVisible(MODAL(opt)), true, opt);
	assert.equal(await page.isVisible(MODAL('subaccount')), false);
	await page.fill(MODAL('host'), 'solo.ckpool.org');
	await page.fill(MODAL('port'), '3333');
	await page.fill(MODAL('user'), '{sub}.farm1');
	await page.fill(MODAL('password'), 'd=65536');
	await page.uncheck(MODAL('extranonce_subscribe'));
	assert.equal(await saveEdit(page), '');
	/* Only what was filled in or switched away from its default is written. */
	assert.deepEqual(normalCalls(await poolCalls(page)), normalCalls([
		{ method: 'add', args: { config: 'btcagent', type: 'pool', values: {
			protocol: 'stratum', host: 'solo.ckpool.org', port: '3333', user: '{sub}.farm1', password: 'd=65536', extranonce_subscribe: '0' } } }
	]));
	assert.equal(await page.isVisible(POOL('new1', 'user')), true);
	assert.equal(await page.isVisible(POOL('new1', 'subaccount')), false);
	/* A plain Save afterwards sends nothing more for the pools. */
	const before = (await poolCalls(page)).length;
	assert.equal(await save(page), 'saved');
	assert.equal((await poolCalls(page)).length, before);
	const saved = await page.evaluate(() => window.__test.uciSaved.btcagent.new1);
	assert.deepEqual(Object.keys(saved).filter((k) => k[0] !== '.').sort(),
		[ 'extranonce_subscribe', 'host', 'password', 'port', 'protocol', 'user' ]);
	await page.close();
});

check('settings: a Stratum pool added in its table row writes protocol, host, port and user only', async () => {
	const page = await openView('view=btcagent/settings');
	await page.click('.cbi-tblsection .cbi-section-create .cbi-button-add');
	await page.selectOption(POOL('new1', 'protocol'), 'stratum');
	await page.fill(POOL('new1', 'host'), '192.0.2.7');
	await page.fill(POOL('new1', 'port'), '3333');
	await page.fill(POOL('new1', 'user'), '{sub}.farm1');
	assert.equal(await save(page), 'saved');
	assert.deepEqual(normalCalls(await poolCalls(page)), normalCalls([
		{ method: 'add', args: { config: 'btcagent', type: 'pool', values: { protocol: 'stratum', host: '192.0.2.7', port: '3333', user: '{sub}.farm1' } } }
	]));
	await page.close();
});

check('settings: Stratum V1 advanced options: shares per minute 1-60, difficulties, fractions for the lowest', async () => {
	const page = await openView('view=btcagent/settings');
	await showTab(page, 'advanced');
	const spm = id('main', 'stratum_shares_per_minute');
	for (const bad of [ '0', '61', '6.5', '-1', 'six' ])
		assert.notEqual(await typeInto(page, spm, bad), '', `shares per minute ${bad}`);
	for (const good of [ '', '1', '60', '6' ])
		assert.equal(await typeInto(page, spm, good), '', `shares per minute ${good}`);
	const start = id('main', 'stratum_start_difficulty');
	for (const bad of [ '0', '1.5', '-1' ])
		assert.notEqual(await typeInto(page, start, bad), '', `start difficulty ${bad}`);
	assert.equal(await typeInto(page, start, '65536'), '');
	const min = id('main', 'stratum_min_difficulty');
	for (const bad of [ '0', '0.0', '-1', '1e3', 'abc', '1,5' ])
		assert.notEqual(await typeInto(page, min, bad), '', `min difficulty ${bad}`);
	assert.match(await typeInto(page, min, '0'), /greater than 0/);
	for (const good of [ '1', '0.5', '.25', '2048' ])
		assert.equal(await typeInto(page, min, good), '', `min difficulty ${good}`);
	assert.equal(await save(page), 'saved');
	const saved = await page.evaluate(() => window.__test.uciSaved.btcagent.main);
	assert.deepEqual([ saved.stratum_shares_per_minute, saved.stratum_start_difficulty, saved.stratum_min_difficulty ], [ '6', '65536', '2048' ]);
	await page.close();
});

/* ---------------- the stand-in form against the real form.js ---------------- */

const RECORDINGS = path.join(__dirname, 'recordings');
const AGENT_DEFAULTS = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures/agent-defaults.json'), 'utf8'));

check('rule: every option shows the agent\'s default when absent, and a hidden option keeps its value', async () => {
	const page = await openView('view=btcagent/settings');
	const rules = await page.evaluate(() => window.__test.optionRules());
	await page.close();
	const problems = [];
	for (const r of rules) {
		if (r.name.startsWith('pool.') || r.widget === 'DynamicList') continue;
		const want = AGENT_DEFAULTS[r.name];
		if (want === undefined) { problems.push(`${r.name}: not in fixtures/agent-defaults.json`); continue; }
		/* A switch or list shows o.default; a text box shows its placeholder over an empty value. */
		const shown = (r.widget === 'Flag' || r.widget === 'ListValue') ? r.default : (r.placeholder == null ? '' : r.placeholder);
		if (shown !== want) problems.push(`${r.name}: the page shows ${JSON.stringify(shown)} when absent, the agent's default is ${JSON.stringify(want)}`);
		if ((r.widget === 'Value') && r.default != null) problems.push(`${r.name}: a text box with o.default would write it on Save`);
		if (r.depends && !r.retain) problems.push(`${r.name}: depends() without o.retain: Save deletes it while hidden`);
	}
	assert.deepEqual(problems, []);
});

/* The same user actions as in the recorded flows, on the stand-in page. */
const FLAG_TABS = { enabled: 'basic', multi_user_mode: 'basic', use_ip_as_worker_name: 'workers', pool_use_tls: 'network',
	tls_skip_certificate_verify: 'network', direct_connect_with_proxy: 'network', direct_connect_after_proxy: 'network', use_proxy: 'network',
	always_keep_downconn: 'advanced', disconnect_when_lost_asicboost: 'advanced', submit_response_from_server: 'advanced', http_debug_enable: 'advanced' };
async function flipAll(page) {
	const todo = Object.keys(FLAG_TABS);
	for (let round = 0; round < 3 && todo.length; round++)
		for (const f of todo.slice()) {
			await showTab(page, FLAG_TABS[f]);
			if (!(await page.isVisible(id('main', f)))) continue;
			await page.setChecked(id('main', f), !(await page.isChecked(id('main', f))));
			todo.splice(todo.indexOf(f), 1);
		}
	assert.deepEqual(todo, [], 'every switch was shown');
}
const FLOW_STEPS = {
	'untouched-shipped': [ async () => {} ],
	'untouched-minimal': [ async () => {} ],
	'untouched-no-listen': [ async () => {} ],
	'proxy-off-then-on': [
		async (page) => { await showTab(page, 'network'); await page.uncheck(id('main', 'use_proxy')); },
		async (page) => { await showTab(page, 'network'); await page.check(id('main', 'use_proxy')); } ],
	'edit-port-and-proxy': [ async (page) => {
		await page.fill(id('main', 'agent_listen_port'), '3334');
		await showTab(page, 'network');
		const adder = '.cbi-value[data-name="proxy"] input.cbi-dynlist-add';
		for (const v of [ "socks5://u:p'q@[2001:db8::1]:1080", 'system' ]) { await page.fill(adder, v); await page.press(adder, 'Enter'); }
	} ],
	'flags-all-flipped': [ flipAll, flipAll ]
};

/* uci calls as rpcd gets them, with what makes no difference left out. */
function normalCalls(calls) {
	return calls.filter((c) => [ 'add', 'set', 'delete', 'order' ].includes(c.method)).map((c) => {
		const a = Object.assign({}, c.args);
		if (a.options == null) delete a.options;
		if (a.values) a.values = Object.fromEntries(Object.entries(a.values).sort());
		if (a.options) a.options = a.options.slice().sort();
		return { method: c.method, args: Object.fromEntries(Object.entries(a).sort()) };
	});
}

for (const flow of Object.keys(FLOW_STEPS)) {
	check(`recording ${flow}: the stand-in form sends the uci calls the real form.js sent`, async () => {
		const rec = JSON.parse(fs.readFileSync(path.join(RECORDINGS, flow + '.json'), 'utf8'));
		assert.equal(rec.saves.length, FLOW_STEPS[flow].length);
		for (let i = 0; i < rec.saves.length; i++) {
			const page = await openView(`view=btcagent/settings&rec=${flow}&step=${i}`);
			await FLOW_STEPS[flow][i](page);
			await page.click('#btn-save');
			await page.waitForFunction(() => document.getElementById('save-result').textContent !== '');
			assert.equal(await page.textContent('#save-result'), 'saved', `step ${i}`);
			const sent = await page.evaluate(() => window.__test.ubusCalls || []);
			assert.deepEqual(normalCalls(sent), normalCalls(rec.saves[i].calls), `step ${i}`);
			assert.deepEqual(page.consoleErrors, []);
			await page.close();
		}
	});
}

check('recordings: under the real LuCI an untouched Save changed nothing the agent does, and proxies survived', () => {
	for (const flow of [ 'untouched-shipped', 'untouched-minimal', 'untouched-no-listen', 'proxy-off-then-on' ]) {
		const rec = JSON.parse(fs.readFileSync(path.join(RECORDINGS, flow + '.json'), 'utf8'));
		assert.ok(!rec.print_config_before.error, flow + ': ' + rec.print_config_before.error);
		assert.deepEqual(rec.saves[rec.saves.length - 1].print_config_after, rec.print_config_before, flow);
	}
	const proxy = JSON.parse(fs.readFileSync(path.join(RECORDINGS, 'proxy-off-then-on.json'), 'utf8'));
	assert.match(proxy.saves[0].uci_file_after, /list proxy 'socks5:\/\/user:pass@192\.0\.2\.1:1080'/);
	assert.match(proxy.saves[0].uci_file_after, /option use_proxy '0'/);
	const pools = JSON.parse(fs.readFileSync(path.join(RECORDINGS, 'pools-add-delete-reorder.json'), 'utf8'));
	assert.deepEqual(pools.saves[1].print_config_after.pools, [ [ 'cn.ss.btc.com', 443, 'farm3' ], [ 'us.ss.btc.com', 1800, 'YourSubAccountName' ], [ 'us.ss.btc.com', 3333, 'YourSubAccountName' ] ]);
});

/* ---------------- status view ---------------- */

check('status: shows the sample document (service, totals, pools, sub-accounts, workers)', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	assert.equal(await page.textContent('.btcagent-running'), 'Running');
	const total = (k) => page.textContent(`tr[data-total="${k}"] td:last-child`);
	assert.equal(await total('miners'), '3');
	assert.equal(await total('pools'), '2 / 3');
	assert.equal(await total('accepted'), '100');
	assert.equal(await total('rejected'), '1 (0.99%)');
	assert.equal(await total('hashrate'), '120 TH/s');
	const pools = await page.$$eval('table.btcagent-pools tr.btcagent-pool-row', (rows) =>
		rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
	assert.deepEqual(pools[0], [ 'us.ss.btc.com:1800', 'farm1', 'Up', 'direct', '2', '57s ago', '3s ago', '79', '1' ]);
	assert.deepEqual(pools[1].slice(0, 6), [ 'us.ss.btc.com:1800', 'farm2', 'Up', 'socks5://192.0.2.1:1080', '1', '3m 20s ago' ]);
	assert.deepEqual(pools[2].slice(0, 7), [ 'eu.ss.btc.com:1800', 'farm2', 'Connecting', 'direct', '0', '10s ago', 'never' ]);
	const subs = await page.$$eval('tr.btcagent-subaccount-row', (rows) => rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
	assert.deepEqual(subs, [ [ 'farm1', '1', '2', '79', '1', '80.0 TH/s' ], [ 'farm2', '2', '1', '41', '0', '40.0 TH/s' ] ]);
	const workers = await page.$$eval('tr.btcagent-worker-row', (rows) => rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
	assert.deepEqual(workers[0], [ 'avalon-1246', 'farm2', '192.168.1.100', '131072', '1m 15s ago', '41', '0', '1.35 PH/s' ]);
	assert.deepEqual(workers[2], [ 's19-001', 'farm1', '192.168.1.23', '65536', '5s ago', '40', '0', '40.0 TH/s' ]);
	assert.equal(workers[1][7], '950 GH/s');
	assert.equal(workers[1][4], 'never');
	assert.deepEqual(page.consoleErrors, []);
	await shot(page, 'status.png');
	await page.close();
});

check('status: untrusted names are shown as text, never as markup', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	const names = await columnTexts(page, 'btcagent-workers', 0);
	assert.ok(names.includes('l7-ltc<img src=x onerror=window.__xss=1>'));
	assert.equal(await page.$$eval('table.btcagent-workers img', (l) => l.length), 0);
	assert.equal(await page.evaluate(() => window.__xss), undefined);
	await page.close();
});

check('status: worker columns sort by clicking the headers', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	const names = () => columnTexts(page, 'btcagent-workers', 0).then((l) => l.map((n) => n.slice(0, 6)));
	assert.deepEqual(await names(), [ 'avalon', 'l7-ltc', 's19-00' ], 'default: by worker name A-Z');
	await page.click('th[data-sort-key="hashrate"]');
	assert.deepEqual(await names(), [ 'avalon', 's19-00', 'l7-ltc' ], 'hashrate: largest first');
	assert.match(await page.textContent('th[data-sort-key="hashrate"]'), /\u25bc/);
	await page.click('th[data-sort-key="hashrate"]');
	assert.deepEqual(await names(), [ 'l7-ltc', 's19-00', 'avalon' ], 'hashrate: smallest first');
	await page.click('th[data-sort-key="ip"]');
	assert.deepEqual(await columnTexts(page, 'btcagent-workers', 2), [ '192.168.1.9', '192.168.1.23', '192.168.1.100' ], 'IPs in numeric order');
	await page.click('th[data-sort-key="last_share_age_seconds"]');
	assert.deepEqual(await names(), [ 's19-00', 'avalon', 'l7-ltc' ], 'last share: most recent first, never last');
	await page.click('th[data-sort-key="last_share_age_seconds"]');
	assert.deepEqual(await names(), [ 'avalon', 's19-00', 'l7-ltc' ], 'never stays last when reversed');
	await page.click('th[data-sort-key="worker"]');
	await page.click('th[data-sort-key="worker"]');
	assert.deepEqual(await names(), [ 's19-00', 'l7-ltc', 'avalon' ], 'worker name Z-A');
	await page.close();
});

check('status: poll refresh updates the page in place and keeps the sort', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	assert.deepEqual(await page.evaluate(() => window.__test.polls.map((p) => p.interval)), [ 5 ]);
	await page.click('th[data-sort-key="hashrate"]');
	await page.evaluate((p) => {
		window.__marker = 'same page';
		const doc = JSON.parse(window.__test.files[p]);
		doc.totals.accepted_last_5min = 250;
		doc.miners.push({ worker: 's21-077', subaccount: 'farm1', ip: '192.168.1.77', difficulty: 262144,
			shares_accepted: 1, shares_rejected: 0, last_share_age_seconds: 1, hashrate: 2.5e18 });
		doc.pools[2].state = 'down';
		window.__test.files[p] = JSON.stringify(doc);
		return window.__test.pollTick();
	}, STATUS_PATH);
	assert.equal(await page.evaluate(() => window.__marker), 'same page');
	assert.equal(await page.textContent('tr[data-total="accepted"] td:last-child'), '250');
	const first = await page.$$eval('tr.btcagent-worker-row', (r) => Array.from(r[0].children).map((c) => c.textContent));
	assert.equal(first[0], 's21-077', 'still sorted by hashrate');
	assert.equal(first[7], '2.50 EH/s');
	assert.equal(await page.textContent('table.btcagent-pools tr.btcagent-pool-row:nth-of-type(4) td:nth-child(3)'), 'Down');
	/* The agent stops and its file goes away: the page says so at the next poll. */
	await page.evaluate((p) => { delete window.__test.files[p]; window.__test.services.btcagent.running = false; return window.__test.pollTick(); }, STATUS_PATH);
	assert.equal(await page.textContent('.btcagent-not-running'), 'Not running');
	assert.match(await page.textContent('.btcagent-no-data'), /not running, so there is no data yet/);
	assert.equal(await page.$$eval('tr.btcagent-worker-row', (l) => l.length), 0);
	await page.close();
});

check('status: missing status file says not running / no data', async () => {
	let page = await openView('view=btcagent/status&running=0');
	assert.equal(await page.textContent('.btcagent-not-running'), 'Not running');
	assert.match(await page.textContent('.btcagent-no-data'), /BTCAgent is not running, so there is no data yet/);
	assert.equal(await page.$$eval('table.btcagent-pools', (l) => l.length), 0);
	await shot(page, 'status-not-running.png');
	await page.close();
	page = await openView('view=btcagent/status&running=1');
	assert.match(await page.textContent('.btcagent-no-data'), /running but has not written any status yet/);
	await page.close();
	/* No rc.list answer at all (e.g. older rpcd): still a clear message. */
	page = await openView('view=btcagent/status');
	assert.equal(await page.textContent('.btcagent-unknown'), 'Unknown');
	assert.match(await page.textContent('.btcagent-no-data'), /no data yet/);
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('status: a stopped agent\'s old file is flagged; a corrupt file is reported', async () => {
	let page = await openView('view=btcagent/status&status=status-sample&running=0');
	assert.match(await page.textContent('.btcagent-stale'), /figures below are the last it wrote/);
	await page.close();
	page = await openView('view=btcagent/status&status=status-corrupt&running=1');
	assert.match(await page.textContent('.btcagent-bad-status'), /The status file could not be read: /);
	await page.close();
	page = await openView('view=btcagent/status&status=status-array&running=1');
	assert.match(await page.textContent('.btcagent-bad-status'), /not a JSON object/);
	await page.close();
});

check('status: a huge farm is capped at 2000 rows with a note', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	await page.evaluate((p) => {
		const doc = JSON.parse(window.__test.files[p]);
		doc.miners = [];
		for (let i = 0; i < 2500; i++)
			doc.miners.push({ worker: 'rig-' + i, subaccount: 'farm1', ip: '10.0.' + (i >> 8) + '.' + (i & 255),
				difficulty: 65536, shares_accepted: i, shares_rejected: 0, last_share_age_seconds: i % 90, hashrate: 1e14 + i });
		window.__test.files[p] = JSON.stringify(doc);
		return window.__test.pollTick();
	}, STATUS_PATH);
	assert.equal(await page.$$eval('tr.btcagent-worker-row', (l) => l.length), 2000);
	assert.match(await page.textContent('.btcagent-truncated'), /first 2000 of 2500/);
	assert.equal(await page.textContent('h3:has(+ table.btcagent-workers)'), 'Workers (2500)');
	await page.close();
});

check('status: warns when status_file points where the page cannot read', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1&uci=uci-other-status-file');
	assert.match(await page.textContent('body'),
		/The status file is set to \/tmp\/btcagent-status.json, but this page can only read \/var\/run\/btcagent\/status.json\./);
	await page.close();
});

check('status: history charts: a line per series, share bars, pool events on the time axis, 1 h / 24 h switch', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	const series = () => page.$$eval('svg.btcagent-chart-hashrate path.btcagent-series', (l) =>
		l.map((p) => ({ name: p.getAttribute('data-series'), moves: (p.getAttribute('d').match(/M/g) || []).length,
			points: (p.getAttribute('d').match(/[ML]/g) || []).length })));
	const marks = (chart) => page.$$eval(`svg.${chart} line.btcagent-event-mark`, (l) => l.map((m) => m.getAttribute('data-event')));
	let s = await series();
	assert.deepEqual(s.map((x) => x.name), [ '', 'farm1', 'farm2' ], 'the farm, then one line per sub-account');
	/* The fixture's agent was stopped for three minutes: the farm line breaks there. */
	assert.deepEqual(s.map((x) => [ x.points, x.moves ]), [ [ 57, 2 ], [ 57, 2 ], [ 57, 2 ] ]);
	assert.deepEqual(await marks('btcagent-chart-hashrate'), [ 'up', 'dial_failed', 'down', 'up' ], 'the last hour\'s events');
	assert.deepEqual(await marks('btcagent-chart-shares'), [ 'up', 'dial_failed', 'down', 'up' ], 'on both charts');
	const bars = await page.$$eval('svg.btcagent-chart-shares rect.btcagent-bar', (l) => l.length);
	const farm = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures/status-sample.json'), 'utf8')).history.minutes.farm;
	assert.equal(bars, farm.length + farm.filter((p) => p[2] > 0).length,
		'an accepted bar per bucket, a rejected one where there were rejects');
	/* Every mark carries its story as a tooltip, as text. */
	const title = await page.$eval('svg.btcagent-chart-hashrate line[data-event="down"] title', (t) => t.textContent);
	assert.match(title, /connection lost us\.ss\.btc\.com:1800\/farm2: read timeout/);
	assert.equal(await page.$$eval('.btcagent-legend-item', (l) => l.length), 3 + 3 + 2);
	await shot(page, 'status-history-1h.png');

	await page.click('button[data-span="ten_minutes"]');
	s = await series();
	assert.deepEqual(s.map((x) => [ x.points, x.moves ]), [ [ 144, 1 ], [ 144, 1 ], [ 144, 1 ] ]);
	assert.equal((await marks('btcagent-chart-hashrate')).length, 5, 'the day\'s events');
	assert.match(await page.getAttribute('button[data-span="ten_minutes"]', 'class'), /btcagent-span-active/);
	/* The choice survives the next poll. */
	await page.evaluate(() => window.__test.pollTick());
	assert.equal((await series())[0].points, 144);
	await shot(page, 'status-history-24h.png');
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('status: the charts and tables fit a phone screen', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1', { width: 390, height: 844 });
	const box = await page.$eval('svg.btcagent-chart-hashrate', (e) => { const r = e.getBoundingClientRect(); return { w: r.width, h: r.height }; });
	assert.ok(box.w > 300 && box.w <= 390, `chart width ${box.w}`);
	assert.ok(box.h > 60, `chart height ${box.h}`);
	await shot(page, 'status-phone.png');
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('status: offline workers newest first, pool events listed, names as text', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	const offline = await page.$$eval('tr.btcagent-offline-row', (rows) => rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
	assert.deepEqual(offline, [
		[ 'avalon-0815', 'farm2', '192.168.1.42', '10m 0s ago', '110 TH/s' ],
		[ 's19-017', 'farm2', '192.168.1.40', '20m 0s ago', '95.0 TH/s' ],
		[ 's9-<b>old</b>', 'farm1', '192.168.1.41', '11h 6m ago', '13.5 TH/s' ]
	]);
	assert.equal(await page.$$eval('table.btcagent-offline b', (l) => l.length), 0);
	assert.equal(await page.textContent('h3:has(+ div + table.btcagent-offline)'), 'Offline workers (3)');
	const events = await page.$$eval('tr.btcagent-event-row', (rows) => rows.map((r) => Array.from(r.children).map((c) => c.textContent)));
	assert.equal(events.length, 5);
	assert.deepEqual(events[0].slice(0, 2), [ '20m 0s ago', 'connection up' ]);
	assert.deepEqual(events[1].slice(0, 2), [ '20m 30s ago', 'dial failed \u00d74' ]);
	assert.equal(events[2][4], 'read timeout: no byte from the pool for 60 s');
	await shot(page, 'status-offline.png');
	await page.close();
});

check('status: a file from an agent without history shows placeholders, not errors', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1');
	await page.evaluate((p) => {
		const doc = JSON.parse(window.__test.files[p]);
		for (const k of [ 'history', 'pool_events', 'pool_event_counts', 'offline_workers' ]) delete doc[k];
		window.__test.files[p] = JSON.stringify(doc);
		return window.__test.pollTick();
	}, STATUS_PATH);
	assert.match(await page.textContent('.btcagent-no-history'), /No history yet/);
	assert.equal(await page.$$eval('svg.btcagent-chart', (l) => l.length), 0);
	assert.equal(await page.$$eval('table.btcagent-events', (l) => l.length), 0);
	assert.match(await page.textContent('table.btcagent-offline'), /No worker went offline in the last 24 hours/);
	/* Garbage in the history is skipped, not drawn. */
	await page.evaluate((p) => {
		const doc = JSON.parse(window.__test.files[p]);
		doc.history = { minutes: { farm: [ [ 1764034200, 1, 0, 1e12 ], 'x', [ null ], [ 1764034260, 2, 0, 'NaN' ] ], subaccounts: { a: 7 } } };
		doc.pool_events = [ null, 5, { at: 1764034250, event: 'up', pool: 'p:1', subaccount: 's' } ];
		window.__test.files[p] = JSON.stringify(doc);
		return window.__test.pollTick();
	}, STATUS_PATH);
	assert.equal(await page.$$eval('svg.btcagent-chart-hashrate path.btcagent-series', (l) => l.length), 2);
	assert.equal(await page.$$eval('tr.btcagent-event-row', (l) => l.length), 1);
	assert.deepEqual(page.consoleErrors, []);
	await page.close();
});

check('status: zh_Hans translation renders', async () => {
	const page = await openView('view=btcagent/status&status=status-sample&running=1&lang=zh_Hans');
	const body = await page.textContent('body');
	for (const s of [ '运行中', '矿池连接', '各子账户矿机', '算力', '近 5 分钟接受份额', '矿工（3）', '历史', '最近 1 小时', '离线矿工（3）', '矿池事件' ])
		assert.ok(body.includes(s), `page shows ${s}`);
	await shot(page, 'status-zh_Hans.png');
	await page.close();
});

/* ---------------- runner ---------------- */

async function main() {
	const only = process.argv[2] ? new RegExp(process.argv[2]) : null;
	const srv = await server.start();
	base = srv.url;
	const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'btcagent-luci-chromium-'));
	let passed = 0, failed = 0;
	try {
		/* A persistent context on a fresh directory = Chromium's --user-data-dir. */
		browser = await chromium.launchPersistentContext(profile, {
			executablePath: CHROMIUM,
			headless: true,
			args: [ '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
				'--disable-background-networking', '--disable-component-update', '--disable-sync' ]
		});
		for (const c of checks) {
			if (only && !only.test(c.name)) continue;
			try {
				await c.fn();
				passed++;
				console.log(`ok - ${c.name}`);
			} catch (e) {
				failed++;
				console.log(`not ok - ${c.name}\n  ${String(e && e.stack || e).split('\n').slice(0, 6).join('\n  ')}`);
			}
		}
	} finally {
		if (browser) await browser.close();
		srv.server.close();
		fs.rmSync(profile, { recursive: true, force: true });
	}
	console.log(`${passed} passed, ${failed} failed`);
	process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); console.log('0 passed, 1 failed'); process.exit(1); });
