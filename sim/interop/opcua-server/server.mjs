// node-opcua server for the plantsync OPC UA interop tests
// (agent/source/opcua/interop_test.go). It listens on 127.0.0.1 only.
//
//   node server.mjs --port N --pki DIR [--max-sessions N] [--accept-unknown] [--user NAME:PASSWORD]
//
// Address space (namespace urn:plantsync:interop:machines, ns=1):
//   Objects/Plant/Line1/M1/Temp      Double, changed with `set`
//   Objects/Plant/Line1/M1/Count     UInt32, changed with `set` or `tick`
//   Objects/Plant/Line1/M2/Temp      Double, removed with `delete`
//   Objects/Plant/Line1/Level        Double, for server-side deadband
//   Objects/Plant/Line1/Hist         UInt32, historized (in memory)
//   Objects/Plant/Press3             event notifier of the Server object
//     OilPressureLow (Boolean) drives the OffNormalAlarm OilPressureAlarm
//
// NodeIds are strings: ns=1;s=Line1.M1.Temp and so on.
//
// It reads one command per line on stdin and answers one JSON line per
// command on stdout ({"event":"ok",...} or {"event":"error",...}):
//   set KEY VALUE        write a value (Double, UInt32 or Boolean by node)
//   tick KEY MS          increment a UInt32 node every MS milliseconds
//   untick KEY
//   delete KEY           delete a node from the address space
//   alarm on|off         set OilPressureLow (raises/clears the alarm)
//   sessions             current session count
//   quit
// Unprompted lines: {"event":"ready",...} once listening, and
// {"event":"create_session"} / {"event":"create_session_request"} /
// {"event":"session_closed"} as they happen, so tests can count attempts.
import readline from "node:readline";
import {
    OPCUAServer,
    OPCUACertificateManager,
    MessageSecurityMode,
    SecurityPolicy,
    DataType,
    Variant,
    StatusCodes,
    nodesets,
} from "node-opcua";

function parseArgs(argv) {
    const out = { port: 0, pki: "", maxSessions: 10, acceptUnknown: false, user: "" };
    for (let i = 0; i < argv.length; i++) {
        switch (argv[i]) {
            case "--port": out.port = Number(argv[++i]); break;
            case "--pki": out.pki = argv[++i]; break;
            case "--max-sessions": out.maxSessions = Number(argv[++i]); break;
            case "--accept-unknown": out.acceptUnknown = true; break;
            case "--user": out.user = argv[++i]; break;
            default: throw new Error(`unknown argument ${argv[i]}`);
        }
    }
    if (!out.port || !out.pki) {
        throw new Error("usage: server.mjs --port N --pki DIR [--max-sessions N] [--accept-unknown] [--user NAME:PASSWORD]");
    }
    return out;
}

function emit(obj) {
    process.stdout.write(JSON.stringify(obj) + "\n");
}

const args = parseArgs(process.argv.slice(2));

const certificateManager = new OPCUACertificateManager({
    rootFolder: args.pki,
    automaticallyAcceptUnknownCertificate: args.acceptUnknown,
});
await certificateManager.initialize();

// With --user, anonymous sessions are refused and only that user may log in.
let userManager;
if (args.user) {
    const sep = args.user.indexOf(":");
    const name = args.user.slice(0, sep);
    const password = args.user.slice(sep + 1);
    userManager = { isValidUser: (u, p) => u === name && p === password };
}

const server = new OPCUAServer({
    port: args.port,
    host: "127.0.0.1",
    hostname: "127.0.0.1",
    alternateHostname: ["127.0.0.1"],
    serverCertificateManager: certificateManager,
    securityPolicies: [
        SecurityPolicy.None,
        SecurityPolicy.Basic256Sha256,
        SecurityPolicy.Aes128_Sha256_RsaOaep,
        SecurityPolicy.Aes256_Sha256_RsaPss,
    ],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: !args.user,
    userManager,
    serverCapabilities: { maxSessions: args.maxSessions },
    maxConnectionsPerEndpoint: 50,
    nodesets: [nodesets.standard],
    isAuditing: false,
    serverInfo: { applicationUri: "urn:plantsync:interop:node-opcua", productUri: "urn:plantsync:interop" },
    buildInfo: { productName: "plantsync interop node-opcua server" },
});

await server.initialize();

const addressSpace = server.engine.addressSpace;
const namespace = addressSpace.getOwnNamespace();
const objects = addressSpace.rootFolder.objects;

const plant = namespace.addFolder(objects, { browseName: "Plant", nodeId: "s=Plant" });
const line1 = namespace.addFolder(plant, { browseName: "Line1", nodeId: "s=Line1" });

const nodes = new Map();

function variable(parent, key, name, dataType, value) {
    const v = namespace.addVariable({
        componentOf: parent,
        browseName: name,
        nodeId: "s=" + key,
        dataType,
        value: new Variant({ dataType, value }),
    });
    nodes.set(key, { node: v, dataType });
    return v;
}

for (const m of ["M1", "M2"]) {
    const folder = namespace.addObject({ organizedBy: line1, browseName: m, nodeId: "s=Line1." + m });
    variable(folder, `Line1.${m}.Temp`, "Temp", DataType.Double, 20.0);
    variable(folder, `Line1.${m}.Count`, "Count", DataType.UInt32, 0);
}
variable(line1, "Line1.Level", "Level", DataType.Double, 0.0);
const hist = variable(line1, "Line1.Hist", "Hist", DataType.UInt32, 0);
addressSpace.installHistoricalDataNode(hist, { maxOnlineValue: 100000 });

// Press3 reports its alarms through the Server object's notifier.
const press = namespace.addObject({
    organizedBy: plant,
    browseName: "Press3",
    nodeId: "s=Press3",
    eventNotifier: 1,
    eventSourceOf: addressSpace.rootFolder.objects.server,
});
const oilLow = variable(press, "Press3.OilPressureLow", "OilPressureLow", DataType.Boolean, false);
const oilNormal = variable(press, "Press3.OilPressureNormal", "OilPressureNormal", DataType.Boolean, false);
const alarm = namespace.instantiateOffNormalAlarm({
    browseName: "OilPressureAlarm",
    nodeId: "s=Press3.OilPressureAlarm",
    componentOf: press,
    conditionSource: press,
    conditionName: "OilPressureLow",
    inputNode: oilLow,
    normalState: oilNormal,
});
alarm.setEnabledState(true);

server.on("request", (request) => {
    if (request && request.constructor && request.constructor.name === "CreateSessionRequest") {
        emit({ event: "create_session_request" });
    }
});
server.on("create_session", () => emit({ event: "create_session" }));
server.on("session_closed", () => emit({ event: "session_closed" }));

await server.start();

const endpoint = server.getEndpointUrl();
emit({
    event: "ready",
    endpoint,
    port: args.port,
    namespace: namespace.namespaceUri,
    namespaceIndex: namespace.index,
    certificate: server.getCertificate ? server.getCertificate().toString("base64") : "",
});

const ticks = new Map();

function setValue(key, raw) {
    const entry = nodes.get(key);
    if (!entry) {
        throw new Error(`no node ${key}`);
    }
    let value;
    switch (entry.dataType) {
        case DataType.Boolean: value = raw === "true" || raw === "1"; break;
        case DataType.UInt32: value = Number.parseInt(raw, 10) >>> 0; break;
        default: value = Number.parseFloat(raw);
    }
    entry.node.setValueFromSource(new Variant({ dataType: entry.dataType, value }), StatusCodes.Good, new Date());
}

function handle(line) {
    const parts = line.trim().split(/\s+/);
    const cmd = parts[0];
    switch (cmd) {
        case "":
            return;
        case "set":
            setValue(parts[1], parts[2]);
            break;
        case "tick": {
            const key = parts[1];
            const ms = Number(parts[2]);
            const entry = nodes.get(key);
            if (!entry) throw new Error(`no node ${key}`);
            clearInterval(ticks.get(key));
            ticks.set(key, setInterval(() => {
                const cur = entry.node.readValue().value.value;
                setValue(key, String(cur + 1));
            }, ms));
            break;
        }
        case "untick":
            clearInterval(ticks.get(parts[1]));
            ticks.delete(parts[1]);
            break;
        case "delete": {
            const entry = nodes.get(parts[1]);
            if (!entry) throw new Error(`no node ${parts[1]}`);
            addressSpace.deleteNode(entry.node);
            nodes.delete(parts[1]);
            break;
        }
        case "alarm":
            setValue("Press3.OilPressureLow", parts[1] === "on" ? "true" : "false");
            break;
        case "sessions":
            emit({ event: "ok", cmd, sessions: server.currentSessionCount });
            return;
        case "quit":
            shutdown();
            return;
        default:
            throw new Error(`unknown command ${cmd}`);
    }
    emit({ event: "ok", cmd: line.trim() });
}

let stopping = false;
async function shutdown() {
    if (stopping) return;
    stopping = true;
    for (const t of ticks.values()) clearInterval(t);
    await server.shutdown(0);
    emit({ event: "stopped" });
    process.exit(0);
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
    try {
        handle(line);
    } catch (err) {
        emit({ event: "error", cmd: line.trim(), error: String(err && err.message ? err.message : err) });
    }
});
// The test process owns this server: when it goes away, so does the server.
rl.on("close", shutdown);
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
