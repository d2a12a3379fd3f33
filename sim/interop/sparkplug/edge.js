// A Sparkplug B edge node for the interop tests of the agent's MQTT source,
// built on the npm packages sparkplug-client (MQTT, seq and bdSeq handling)
// and sparkplug-payload (protobuf encoding): payloads come from an
// implementation that is not plantsync's.
//
//   node edge.js BROKER_URL GROUP EDGE_NODE DEVICE
//
// It publishes its births on connect, answers an NCMD "Node Control/Rebirth"
// with new births, and otherwise does what the test writes to its stdin, one
// JSON command per line:
//
//   {"cmd":"ndata","alias":1,"type":"Float","value":21.5}        (alias only)
//   {"cmd":"ndata","name":"Count","alias":2,"type":"Int32","value":-3}
//   {"cmd":"ddata","alias":10,"type":"Double","value":3.5}
//   {"cmd":"ddeath"}
//   {"cmd":"stop"}                                  (NDEATH, disconnect, exit)
//
// Each event is one JSON line on stdout: connected, birth, rebirth,
// published, error.
"use strict";

const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [serverUrl, groupId, edgeNode, device] = process.argv.slice(2);
if (!serverUrl || !groupId || !edgeNode || !device) {
  process.stderr.write("usage: node edge.js BROKER_URL GROUP EDGE_NODE DEVICE\n");
  process.exit(2);
}

function say(event, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ event: event }, extra || {})) + "\n");
}

const client = sparkplug.newClient({
  serverUrl: serverUrl,
  username: "",
  password: "",
  groupId: groupId,
  edgeNode: edgeNode,
  clientId: "interop-edge-" + edgeNode + "-" + process.pid,
  publishDeath: true,
  version: "spBv1.0",
});

function births() {
  const now = Date.now();
  client.publishNodeBirth({
    timestamp: now,
    metrics: [
      { name: "Node Control/Rebirth", alias: 3, type: "Boolean", value: false },
      { name: "Temperature", alias: 1, type: "Float", value: 20.5,
        properties: { engUnit: { type: "String", value: "°C" } } },
      { name: "Count", alias: 2, type: "Int32", value: -7 },
      { name: "Running", alias: 4, type: "Boolean", value: true },
    ],
  });
  client.publishDeviceBirth(device, {
    timestamp: now,
    metrics: [{ name: "Pressure", alias: 10, type: "Double", value: 3.25 }],
  });
  say("birth");
}

client.on("connect", () => say("connected"));
client.on("birth", births);
client.on("error", (err) => say("error", { error: String(err) }));
client.on("ncmd", (payload) => {
  for (const m of payload.metrics || []) {
    if (m.name === "Node Control/Rebirth" && m.value === true) {
      say("rebirth");
      births();
    }
  }
});

function metricOf(c) {
  const m = { alias: c.alias, type: c.type, value: c.value, timestamp: Date.now() };
  if (c.name) {
    m.name = c.name;
  }
  return m;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let c;
  try {
    c = JSON.parse(line);
  } catch (err) {
    say("error", { error: "bad command: " + line });
    return;
  }
  switch (c.cmd) {
    case "ndata":
      client.publishNodeData({ timestamp: Date.now(), metrics: [metricOf(c)] });
      break;
    case "ddata":
      client.publishDeviceData(device, { timestamp: Date.now(), metrics: [metricOf(c)] });
      break;
    case "ddeath":
      client.publishDeviceDeath(device, { timestamp: Date.now(), metrics: [] });
      break;
    case "stop":
      client.stop();
      say("published", { type: "NDEATH" });
      setTimeout(() => process.exit(0), 200);
      return;
    default:
      say("error", { error: "unknown command " + c.cmd });
      return;
  }
  say("published", { cmd: c.cmd });
});
rl.on("close", () => {
  client.stop();
  setTimeout(() => process.exit(0), 200);
});
