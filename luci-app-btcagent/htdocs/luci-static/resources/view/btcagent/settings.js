'use strict';
'require view';
'require form';
'require uci';

/*
 * Settings page for btcagent: edits /etc/config/btcagent, which the init
 * script translates into the agent's JSON config. Option names are fixed by
 * that contract (see uci-options.txt beside the Makefile).
 *
 * Every option shows the agent's own default when it is absent from the file
 * (o.default for switches, the placeholder for text), so that saving an
 * untouched page changes nothing the agent does; options hidden by depends()
 * keep their value (o.retain), since LuCI would otherwise delete them on Save.
 * tests/luci checks both rules against the agent's defaults. The pools table
 * is the exception to the second rule: a pool's options of the other protocol
 * (sub-account, or user, password and the Stratum switches) are deleted when
 * its protocol changes, since the agent refuses them.
 *
 * Validation is written out here rather than left to LuCI datatypes so that
 * every rule the agent enforces at start-up is caught while typing, with a
 * message that says what is wrong.
 */

var PORT_MAX = 65535;

function isPort(value) {
	if (!/^[0-9]{1,5}$/.test(value))
		return false;
	var n = parseInt(value, 10);
	return n >= 1 && n <= PORT_MAX;
}

function isIPv4(value) {
	var parts = value.split('.');
	if (parts.length !== 4)
		return false;
	for (var i = 0; i < 4; i++) {
		if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i]) || parseInt(parts[i], 10) > 255)
			return false;
	}
	return true;
}

function isIPv6(value) {
	/* An IPv6 literal may end in an embedded IPv4 address. */
	var groups = value;
	var tailGroups = 0;
	var lastColon = value.lastIndexOf(':');
	if (lastColon >= 0 && value.indexOf('.', lastColon) > lastColon) {
		if (!isIPv4(value.substring(lastColon + 1)))
			return false;
		groups = value.substring(0, lastColon + 1) + '0';
		tailGroups = 1;
	}
	if (!/^[0-9a-fA-F:]+$/.test(groups) || groups.length > 39 + tailGroups * 2)
		return false;
	var halves = groups.split('::');
	if (halves.length > 2)
		return false;
	var count = 0;
	for (var h = 0; h < halves.length; h++) {
		if (halves[h] === '')
			continue;
		var parts = halves[h].split(':');
		for (var i = 0; i < parts.length; i++) {
			if (!/^[0-9a-fA-F]{1,4}$/.test(parts[i]))
				return false;
			count++;
		}
	}
	count += tailGroups;
	return halves.length === 2 ? count < 8 + tailGroups : count === 8 + tailGroups;
}

function isHostname(value) {
	if (value.length < 1 || value.length > 253)
		return false;
	var labels = value.replace(/\.$/, '').split('.');
	for (var i = 0; i < labels.length; i++) {
		if (!/^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(labels[i]))
			return false;
	}
	/* All-numeric dotted names are meant as IPv4 and must be valid as such. */
	return !/^[0-9.]+$/.test(value) || isIPv4(value);
}

function isHost(value) {
	return isIPv4(value) || isIPv6(value) || isHostname(value);
}

/* host:port or [v6]:port; returns true when well formed. */
function isHostPort(value) {
	var m = /^\[([^\]]+)\]:([^:]+)$/.exec(value);
	if (m)
		return isIPv6(m[1]) && isPort(m[2]);
	m = /^([^:]+):([^:]+)$/.exec(value);
	return m != null && isHost(m[1]) && isPort(m[2]);
}

function validatePort(section_id, value) {
	if (value == null || value === '')
		return _('Enter a port number');
	return isPort(String(value)) ? true : _('Port must be a whole number from 1 to 65535');
}

/* An absent option means the agent's default (the placeholder shows it). */
function optionalPort(section_id, value) {
	if (value == null || value === '')
		return true;
	return validatePort(section_id, value);
}

function validateHost(section_id, value) {
	if (value == null || value === '')
		return _('Enter a host name or IP address');
	return isHost(String(value)) ? true : _('Not a valid host name or IP address');
}

function validateListenIP(section_id, value) {
	if (value == null || value === '')
		return true; /* absent: 0.0.0.0, the agent's default */
	return (isIPv4(value) || isIPv6(value)) ? true : _('Not a valid IPv4 or IPv6 address');
}

function validateProxy(section_id, value) {
	if (value == null || value === '')
		return true;
	value = String(value);
	if (value === 'system')
		return true;
	var m = /^([A-Za-z0-9]+):\/\/(.*)$/.exec(value);
	if (!m)
		return isHostPort(value) ? true
			: _('Use socks5://[user:pass@]host:port, http://host:port, https://host:port, system, or host:port');
	var scheme = m[1].toLowerCase();
	if (scheme !== 'socks5' && scheme !== 'http' && scheme !== 'https')
		return _('Unknown proxy scheme: use socks5://, http:// or https://');
	var rest = m[2];
	/* As the agent: the last '@' ends the user name and password, which may hold '#', '?'
	   and '/' as typed; after it, host:port and at most a final '/'. */
	var at = rest.lastIndexOf('@');
	if (at >= 0) {
		if (rest.substring(0, at).indexOf(':') < 1)
			return _('Proxy credentials must be written user:pass@');
		rest = rest.substring(at + 1);
	}
	rest = rest.replace(/\/$/, '');
	return isHostPort(rest) ? true : _('Proxy address must end in host:port with a port from 1 to 65535');
}

function positiveInteger(section_id, value) {
	if (value == null || value === '')
		return true; /* empty: the agent's default applies */
	return /^[1-9][0-9]{0,8}$/.test(String(value)) ? true : _('Must be a whole number greater than 0');
}

function nonNegativeInteger(section_id, value) {
	if (value == null || value === '')
		return true;
	return /^(0|[1-9][0-9]{0,8})$/.test(String(value)) ? true : _('Must be a whole number, 0 or more');
}

/* 1 to 60 shares a minute, as the agent accepts. */
function sharesPerMinute(section_id, value) {
	if (value == null || value === '')
		return true;
	return /^([1-9]|[1-5][0-9]|60)$/.test(String(value)) ? true : _('Must be a whole number from 1 to 60');
}

/* A difficulty: greater than 0, fractions allowed (0.5, .25), as the agent reads it. */
function positiveDecimal(section_id, value) {
	if (value == null || value === '')
		return true;
	value = String(value);
	if (!/^([0-9]+\.?[0-9]*|\.[0-9]+)$/.test(value))
		return _('Must be a number, e.g. 1 or 0.5');
	return parseFloat(value) > 0 ? true : _('Must be greater than 0');
}

/* Multi-user mode as the form shows it (the stored value where the form has no switch,
   as in a pool's edit dialog). */
function multiUserMode(map) {
	var multi = map.lookupOption('multi_user_mode', 'main');
	var value = multi ? multi[0].formvalue('main') : null;
	if (value == null)
		value = uci.get('btcagent', 'main', 'multi_user_mode');
	return value === '1';
}

/* A pool row's identity pass-through switch as the form shows it (the stored value in
   the table row, where the switch is not shown: it is in the edit dialog only). */
function identityPassthrough(map, section_id) {
	var flag = map.lookupOption('identity_passthrough', section_id);
	var value = flag ? flag[0].formvalue(section_id) : null;
	if (value == null)
		value = uci.get('btcagent', section_id, 'identity_passthrough');
	return value === '1';
}

/* The user a Stratum pool expects: the rules of the agent's user template
   (src/protocol/stratum_upstream/user.rs). */
function validateStratumUser(section_id, value) {
	if (value == null || value === '')
		return _('Enter the user name the pool expects, e.g. account.worker');
	value = String(value);
	if (/\s/.test(value))
		return _('The user name may not contain spaces');
	if (/[{}]/.test(value.replace(/\{(sub|worker)\}/g, '')))
		return _('Only {sub} and {worker} may appear in braces');
	var sub = value.indexOf('{sub}') >= 0, worker = value.indexOf('{worker}') >= 0;
	var multi = multiUserMode(this.map);
	if (multi && !sub)
		return _('With multi-user mode on, write {sub} where the sub-account goes, e.g. {sub}.farm1: otherwise every sub-account mines for this one user');
	if (!multi && sub)
		return _('{sub} needs multi-user mode: without it there are no sub-accounts');
	var passthrough = identityPassthrough(this.map, section_id);
	if (worker && !passthrough)
		return _('{worker} needs identity pass-through (in the row\'s edit dialog): without it many miners share one pool connection and one user');
	if (passthrough && !worker)
		return _('With identity pass-through, write {worker} where the worker name goes, e.g. account.{worker}, so the pool sees each worker');
	return true;
}

function validateWorkerName(section_id, value) {
	if (value == null || value === '')
		return true;
	return /^[A-Za-z0-9,=\/.\-_:|^]+$/.test(String(value)) ? true
		: _('Worker names may only use letters, digits and , = / . - _ : | ^');
}

function validateWorkerFormat(section_id, value) {
	if (value == null || value === '')
		return true;
	var literal = String(value).replace(/\{[1-4]\}/g, '');
	if (/[{}]/.test(literal))
		return _('Only {1}, {2}, {3} and {4} may appear in braces');
	return validateWorkerName(section_id, literal.length ? literal : 'x');
}

function validateListenHostPort(section_id, value) {
	if (value == null || value === '')
		return true; /* absent: 127.0.0.1:9999, the agent's default */
	return isHostPort(String(value)) ? true : _('Use ip:port, e.g. 127.0.0.1:9999');
}

function validateStatusFile(section_id, value) {
	if (value == null || value === '')
		return true;
	return /^\/[^\0]*[^\/]$/.test(String(value)) ? true : _('Must be an absolute file path');
}

return view.extend({
	render: function() {
		var m, s, o, pools;

		m = new form.Map('btcagent', _('BTCAgent'),
			_('BTCAgent sits between the miners of this farm and the mining pool: miners connect to this router, and the agent carries their work to the pool over a few shared connections.'));

		s = m.section(form.NamedSection, 'main', 'btcagent');
		s.addremove = false;

		s.tab('basic', _('Basic'));
		s.tab('workers', _('Worker names'));
		s.tab('network', _('Network'));
		s.tab('advanced', _('Advanced'));

		/* --- Basic --- */
		o = s.taboption('basic', form.Flag, 'enabled', _('Enable'),
			_('Start the agent now and at every boot.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('basic', form.Value, 'agent_listen_ip', _('Listen address'),
			_('Address the miners connect to. 0.0.0.0 accepts them on every interface; an IPv6 literal such as :: is also allowed.'));
		o.placeholder = '0.0.0.0';
		o.validate = validateListenIP;

		o = s.taboption('basic', form.Value, 'agent_listen_port', _('Listen port'),
			_('Port the miners connect to (point their pool URL at stratum+tcp://this-router:port).'));
		o.placeholder = '3333';
		o.validate = optionalPort;

		o = s.taboption('basic', form.Flag, 'multi_user_mode', _('Multi-user mode'),
			_('On: the sub-account is the part of each miner\'s user name before the first ".", and each sub-account gets its own pool connections. Off: every miner mines for the sub-account of the pool entry.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('basic', form.SectionValue, '_pools', form.GridSection, 'pool', _('Pools'),
			_('Tried from top to bottom: when the connection to one pool fails, the next one is used. Drag rows to change the order. A BTCAgent (btcpool) pool takes a sub-account, used for every miner when multi-user mode is off; any other pool is Stratum V1 and takes the user name the pool expects. Edit a Stratum V1 row for its password and options.'));
		pools = o.subsection;
		pools.anonymous = true;
		pools.addremove = true;
		pools.sortable = true;
		pools.nodescriptions = true;

		o = pools.option(form.ListValue, 'protocol', _('Protocol'));
		o.editable = true;
		o.value('agent', _('BTCAgent (btcpool)'));
		o.value('stratum', _('Stratum V1'));
		o.default = 'agent';
		/* Absent means the agent protocol. Shown as its value, not only as the default, a
		   Save that leaves it so writes nothing: a ListValue writes a default it shows. */
		o.cfgvalue = function(section_id) {
			var value = form.ListValue.prototype.cfgvalue.apply(this, arguments);
			return value == null ? 'agent' : value;
		};

		o = pools.option(form.Value, 'host', _('Pool host'));
		o.editable = true;
		o.placeholder = 'us.ss.btc.com';
		o.rmempty = false;
		o.validate = validateHost;

		o = pools.option(form.Value, 'port', _('Pool port'));
		o.editable = true;
		o.placeholder = '1800';
		o.rmempty = false;
		o.validate = validatePort;

		/* Sub-account and user share the row's last cell by protocol: LuCI gives each
		   option its own column, so they are two columns, one empty in each row. */
		o = pools.option(form.Value, 'subaccount', _('Sub-account'));
		o.editable = true;
		o.placeholder = 'YourSubAccountName';
		o.depends('protocol', 'agent');
		o.validate = function(section_id, value) {
			if (value == null || value === '') {
				/* Without multi-user mode the pool entry names the only sub-account. */
				var multi = this.map.lookupOption('multi_user_mode', 'main');
				if (multi && multi[0].formvalue('main') !== '1')
					return _('Enter the sub-account: with multi-user mode off every miner mines for it');
				return true;
			}
			return validateWorkerName(section_id, value);
		};

		o = pools.option(form.Value, 'user', _('User'));
		o.editable = true;
		o.depends('protocol', 'stratum');
		o.validate = validateStratumUser;
		o.renderWidget = function(/* ... */) {
			this.placeholder = multiUserMode(this.map) ? '{sub}.farm1' : 'account.worker';
			return form.Value.prototype.renderWidget.apply(this, arguments);
		};

		o = pools.option(form.Value, 'password', _('Password'),
			_('Sent with the user; most pools ignore it, some read settings from it. Empty: x.'));
		o.modalonly = true;
		o.depends('protocol', 'stratum');
		o.placeholder = 'x';

		o = pools.option(form.Flag, 'extranonce_subscribe', _('Extranonce subscribe'),
			_('Ask the pool to announce extranonce changes (mining.extranonce.subscribe) instead of reconnecting. Turn off only for a pool that drops connections that ask.'));
		o.modalonly = true;
		o.depends('protocol', 'stratum');
		o.default = '1';

		o = pools.option(form.Flag, 'identity_passthrough', _('Identity pass-through'),
			_('Give each miner its own connection to this pool, logged in as the user with {worker} replaced by the miner\'s worker name: the pool sees every worker and sets its difficulty. Each miner then takes two of the router\'s connections, and the pool must give 8 or more bytes of extranonce2.'));
		o.modalonly = true;
		o.depends('protocol', 'stratum');
		o.default = '0';

		/* --- Worker names --- */
		o = s.taboption('workers', form.Flag, 'use_ip_as_worker_name', _('Use IP as worker name'),
			_('Name each worker after the miner\'s IP address instead of the name it logs in with. Useful when miners all use the same login.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('workers', form.Value, 'ip_worker_name_format', _('IP worker name format'),
			_('{1} to {4} stand for the four parts of the IPv4 address: {1}x{2}x{3}x{4} turns 192.168.1.23 into 192x168x1x23.'));
		o.placeholder = '{1}x{2}x{3}x{4}';
		o.depends('use_ip_as_worker_name', '1');
		o.retain = true;
		o.validate = validateWorkerFormat;

		o = s.taboption('workers', form.Value, 'fixed_worker_name', _('Fixed worker name'),
			_('When set, every miner gets this worker name, so the pool sees the whole farm as one big miner. Leave empty to keep individual workers.'));
		o.validate = validateWorkerName;

		/* --- Network --- */
		o = s.taboption('network', form.Flag, 'pool_use_tls', _('TLS to the pool'),
			_('Encrypt the connection to the pool. Miners still talk plain TCP to this router. The pool must offer TLS on the port given.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('network', form.Flag, 'tls_skip_certificate_verify', _('Skip certificate check'),
			_('On: accept any certificate from the pool or an https proxy (encrypted, but not protected against impersonation). Off: verify it, which needs correct time on the router.'));
		o.default = '1';
		o.rmempty = false;

		o = s.taboption('network', form.Flag, 'use_proxy', _('Use proxies'),
			_('Off ignores the proxy list below and always connects directly.'));
		o.default = '1';
		o.rmempty = false;

		o = s.taboption('network', form.DynamicList, 'proxy', _('Proxies'),
			_('socks5://[user:pass@]host:port, http://host:port, https://host:port (TLS to the proxy), host:port, or system (take ALL_PROXY / HTTPS_PROXY / HTTP_PROXY from the environment). With several, all are tried at once and the first that connects wins.'));
		o.placeholder = 'socks5://user:pass@192.0.2.1:1080';
		o.depends('use_proxy', '1');
		o.retain = true;
		o.validate = validateProxy;

		o = s.taboption('network', form.Flag, 'direct_connect_with_proxy', _('Race a direct connection'),
			_('Also try a direct connection at the same time as the proxies, and use whichever connects first.'));
		o.depends('use_proxy', '1');
		o.retain = true;
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('network', form.Flag, 'direct_connect_after_proxy', _('Direct connection if proxies fail'),
			_('When every proxy fails, try connecting directly. Turn off where direct traffic to the pool must never leave the farm.'));
		o.depends('use_proxy', '1');
		o.retain = true;
		o.default = '1';
		o.rmempty = false;

		/* --- Advanced --- */
		o = s.taboption('advanced', form.Flag, 'always_keep_downconn', _('Keep miners connected when pools are lost'),
			_('When no pool connection has come back within the failover hold. On: keep miners connected and give them placeholder work until a pool is back; their shares in that time are not paid. Off: disconnect miners so they fail over to their own backup pools.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('advanced', form.Value, 'pool_failover_hold_seconds', _('Hold miners during pool failover (s)'),
			_('When every pool connection is lost, miners stay connected this long while the next pools in the list are dialled, so they never notice a failover. 0 lets them go at once.'));
		o.placeholder = '30';
		o.validate = nonNegativeInteger;

		o = s.taboption('advanced', form.Value, 'fake_job_notify_interval_seconds', _('Placeholder job interval (s)'),
			_('How often miners kept connected without a pool get new placeholder work.'));
		o.placeholder = '30';
		o.depends('always_keep_downconn', '1');
		o.retain = true;
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Flag, 'disconnect_when_lost_asicboost', _('Reconnect miners that lose AsicBoost'),
			_('After a miner has sent more than 100 version-rolling shares, a share without version rolling makes the agent ask it to reconnect, which usually restores AsicBoost (lower power per hash).'));
		o.default = '1';
		o.rmempty = false;

		o = s.taboption('advanced', form.Flag, 'submit_response_from_server', _('Forward pool share results'),
			_('On: miners see the pool\'s real accept or reject for each share (the pool must support it), so reject counts on the miners are true. Off: shares are acknowledged at once, which is faster.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('advanced', form.Value, 'pool_connection_number_per_subaccount', _('Pool connections per sub-account'),
			_('More connections spread miners and limit the damage when one drops; fewer use less bandwidth and memory. New miners join the connection with the fewest miners.'));
		o.placeholder = '5';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'pool_connection_dial_timeout_seconds', _('Connect timeout (s)'),
			_('Time allowed to connect to the pool and finish the handshake before the next pool or proxy is tried.'));
		o.placeholder = '15';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'pool_connection_read_timeout_seconds', _('Read timeout (s)'),
			_('A pool connection silent this long is dropped and dialled again. Too short drops healthy but quiet connections; too long leaves miners on a dead one.'));
		o.placeholder = '60';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'submit_coalesce_ms', _('Share batching (ms)'),
			_('Shares written within this many milliseconds go out in one TCP segment, saving packets on slow links; 0 sends each share at once.'));
		o.placeholder = '50';
		o.validate = nonNegativeInteger;

		o = s.taboption('advanced', form.Value, 'max_unauthorized_connections', _('Connections not logged in, in all'),
			_('Connections that have not authorized yet (a port scan, a flood) are bounded; beyond this the oldest is closed, so miners still get in. A farm needs far fewer.'));
		o.placeholder = '4096';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'max_unauthorized_connections_per_ip', _('Connections not logged in, per address'),
			_('New connections from an address with this many not yet authorized are closed at once. Raise it only for many miners behind one NAT address.'));
		o.placeholder = '256';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'stratum_shares_per_minute', _('Stratum V1: shares per minute'),
			_('Stratum V1 pools only. The agent sets each miner\'s difficulty so that it sends about this many shares a minute (1 to 60). More shares follow a miner\'s hashrate more closely but cost the router more CPU, since the agent checks every share before it goes to the pool.'));
		o.placeholder = '6';
		o.validate = sharesPerMinute;

		o = s.taboption('advanced', form.Value, 'stratum_start_difficulty', _('Stratum V1: starting difficulty'),
			_('Stratum V1 pools only. The difficulty a miner starts with, before the agent has seen its shares (never above the pool\'s). Close to what your miners settle at saves the first minutes of adjusting.'));
		o.placeholder = '16384';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.Value, 'stratum_min_difficulty', _('Stratum V1: lowest difficulty'),
			_('Stratum V1 pools only. No miner gets a lower difficulty than this (fractions such as 0.5 are allowed), so small or idle miners cannot flood the router with shares.'));
		o.placeholder = '1';
		o.validate = positiveDecimal;

		o = s.taboption('advanced', form.Flag, 'http_debug_enable', _('HTTP debug endpoint'),
			_('Serve status and metrics over HTTP. Keep it on 127.0.0.1 unless the LAN may read it.'));
		o.default = '0';
		o.rmempty = false;

		o = s.taboption('advanced', form.Value, 'http_debug_listen', _('HTTP debug address'));
		o.placeholder = '127.0.0.1:9999';
		o.depends('http_debug_enable', '1');
		o.retain = true;
		o.validate = validateListenHostPort;

		o = s.taboption('advanced', form.Value, 'status_file', _('Status file'),
			_('Where the agent writes its status every few seconds. The status page reads /var/run/btcagent/status.json only.'));
		o.placeholder = '/var/run/btcagent/status.json';
		o.validate = validateStatusFile;

		o = s.taboption('advanced', form.Value, 'status_interval_seconds', _('Status interval (s)'),
			_('How often the status file is rewritten. Shorter keeps the status page fresher but writes more often to the router\'s RAM disk.'));
		o.placeholder = '5';
		o.validate = positiveInteger;

		o = s.taboption('advanced', form.ListValue, 'log_verbosity', _('Log detail'),
			_('Higher levels log more, which helps find problems but wears flash and fills the log on busy farms.'));
		o.value('0', _('Normal'));
		o.value('1', _('Verbose'));
		o.value('2', _('Debug'));
		o.value('3', _('Trace'));
		o.default = '0';

		o = s.taboption('advanced', form.ListValue, 'log_target', _('Log to'),
			_('syslog: read with logread or on the System Log page. stderr: only useful when running the agent by hand.'));
		o.value('syslog', _('System log (logread)'));
		o.value('stderr', _('Standard error'));
		o.default = 'syslog';

		return m.render();
	}
});
