// node-http-proxy in front of one backend, for bench/proxy.py:
//   node http_proxy.js LISTEN_PORT TARGET_PORT keepalive|noagent
// "keepalive" reuses connections to the backend (http.Agent keepAlive);
// "noagent" is how rainbowd.js called it, httpProxy.createProxyServer() with
// no agent, which opens a new backend connection for every request.
'use strict'

const http = require('http')
const httpProxy = require('http-proxy')

const [listenPort, targetPort, mode] = process.argv.slice(2)
if (!['keepalive', 'noagent'].includes(mode)) {
  console.error('usage: node http_proxy.js LISTEN_PORT TARGET_PORT keepalive|noagent')
  process.exit(2)
}
const options = {target: `http://127.0.0.1:${targetPort}`}
if (mode === 'keepalive') {
  options.agent = new http.Agent({keepAlive: true})
}
const proxy = httpProxy.createProxyServer(options)
proxy.on('error', (err, req, res) => {
  res.writeHead(502)
  res.end(`Cannot proxy request: ${err}\n`)
})
http.createServer((req, res) => proxy.web(req, res))
  .listen(Number(listenPort), '127.0.0.1')
