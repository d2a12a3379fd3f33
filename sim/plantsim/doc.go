// Package plantsim simulates a plant floor in one process: an OPC UA server
// whose machines change state, count good parts and warm up, and an MQTT
// broker on which a simulated MES publishes completions, consumptions and
// shortages. It stands where real PLC gateways and MES systems stand in the
// data path, in front of the agent's OPC UA and MQTT sources, so that
// `make run`, the integration tests and the end-to-end tests have a plant to
// collect from without any hardware.
//
// Everything the simulator produces is repeatable for a given Config.Seed
// except timestamps and the run id inside message ids, which keeps ids
// unique across restarts.
package plantsim
