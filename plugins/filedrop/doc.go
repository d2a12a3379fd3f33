// Command filedrop is the filedrop site plugin, an agent source: it watches
// a folder into which legacy systems drop CSV or JSON files, maps each row
// to a canonical event (the row's id gives the event id, so a file dropped
// or read again yields the same events), and moves each file to done/ once
// the agent has committed all its events, or to failed/ with a reason file
// naming every malformed line. Good rows of a file with malformed rows are
// still delivered, once; malformed rows become source.error events. See
// README.md.
//
// Data path: drop folder ─▶ this process ─▶ plugins/sdk host in the agent
// (agent/source/plugin) ─▶ agent buffer, acknowledged after commit.
package main
