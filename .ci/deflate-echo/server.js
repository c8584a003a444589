// A permessage-deflate capable WebSocket echo server (Node.js `ws`), the backend for the
// Autobahn compression cases: text and binary messages are echoed as received.
// usage: node server.js [PORT]   (0 or none: a free port; prints the address it listens on)
'use strict';
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({
  host: '127.0.0.1',
  port,
  perMessageDeflate: true,
  maxPayload: 16 * 1024 * 1024,
});
wss.on('listening', () => {
  console.log(`deflate echo listening on ws://127.0.0.1:${wss.address().port}`);
});
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
