/*
 * Static HTTP server for the LuCI view tests, on 127.0.0.1 and a free port.
 * It serves the real view files next to the LuCI stand-ins and fixtures:
 *   /luci-static/  -> luci-app-btcagent/htdocs/luci-static/
 *   /po/           -> luci-app-btcagent/po/
 *   /standin/      -> tests/luci/www/
 *   /fixtures/     -> tests/luci/fixtures/
 */
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');

const REPO = path.resolve(__dirname, '../..');
const MOUNTS = {
	'/luci-static/': path.join(REPO, 'luci-app-btcagent/htdocs/luci-static'),
	'/po/': path.join(REPO, 'luci-app-btcagent/po'),
	'/standin/': path.join(__dirname, 'www'),
	'/fixtures/': path.join(__dirname, 'fixtures'),
	'/recordings/': path.join(__dirname, 'recordings')
};
const TYPES = { '.js': 'text/javascript', '.json': 'application/json', '.html': 'text/html',
	'.css': 'text/css', '.po': 'text/plain' };

function resolve(urlPath) {
	for (const prefix of Object.keys(MOUNTS)) {
		if (!urlPath.startsWith(prefix)) continue;
		const root = MOUNTS[prefix];
		const file = path.normalize(path.join(root, decodeURIComponent(urlPath.slice(prefix.length))));
		return file.startsWith(root + path.sep) ? file : null;
	}
	return null;
}

/* Resolves to { server, url } once listening. */
function start() {
	const server = http.createServer((req, res) => {
		const urlPath = new URL(req.url, 'http://127.0.0.1').pathname;
		if (urlPath === '/favicon.ico') { res.writeHead(204); res.end(); return; }
		const file = urlPath === '/' ? path.join(__dirname, 'www/index.html') : resolve(urlPath);
		if (!file) { res.writeHead(404); res.end('not found'); return; }
		fs.readFile(file, (err, data) => {
			if (err) { res.writeHead(404); res.end('not found'); return; }
			res.writeHead(200, { 'Content-Type': (TYPES[path.extname(file)] || 'application/octet-stream') + '; charset=utf-8',
				'Cache-Control': 'no-store' });
			res.end(data);
		});
	});
	return new Promise((ok, fail) => {
		server.once('error', fail);
		server.listen(0, '127.0.0.1', () => ok({ server, url: `http://127.0.0.1:${server.address().port}` }));
	});
}

module.exports = { start };
