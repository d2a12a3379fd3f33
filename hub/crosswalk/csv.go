package crosswalk

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrCSV marks a crosswalk file that cannot be loaded; the message names
// the file and line.
var ErrCSV = errors.New("crosswalk csv")

// maxRows bounds one table so a wrong file cannot exhaust memory.
const maxRows = 1_000_000

// ReadCSV parses a crosswalk table. The first row names the columns (any
// order; effective_from and optional columns may be left out); lines
// starting with # are comments. Errors name file and line:
//
//	configs/crosswalks/item.csv line 7: column item: empty
func ReadCSV(file string, r io.Reader, spec Spec) ([]Row, error) {
	raw, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCSV, file, err)
	}
	raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")) // a BOM from spreadsheet exports
	cr := csv.NewReader(bytes.NewReader(raw))
	cr.Comment = '#'
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: %s: empty; want a header line: %s", ErrCSV, file, strings.Join(spec.Columns(), ","))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCSV, file, csvErr(err))
	}
	hline, _ := cr.FieldPos(0)
	known := map[string]bool{}
	for _, c := range spec.Columns() {
		known[c] = true
	}
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		if !known[h] {
			return nil, fmt.Errorf("%w: %s line %d: column %q is not known for table %s; want %s", ErrCSV, file, hline, h, spec.Name, strings.Join(spec.Columns(), ", "))
		}
		if seen[h] {
			return nil, fmt.Errorf("%w: %s line %d: column %q given twice", ErrCSV, file, hline, h)
		}
		seen[h] = true
	}
	for _, c := range append(append([]string{}, spec.Keys...), spec.Values...) {
		if !seen[c] {
			return nil, fmt.Errorf("%w: %s line %d: column %s missing from the header; want %s", ErrCSV, file, hline, c, strings.Join(spec.Columns(), ", "))
		}
	}
	var rows []Row
	lines := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCSV, file, csvErr(err))
		}
		line, _ := cr.FieldPos(0)
		if len(rows) >= maxRows {
			return nil, fmt.Errorf("%w: %s line %d: more than %d rows", ErrCSV, file, line, maxRows)
		}
		row := make(Row, len(header))
		for i, v := range rec {
			if v != "" {
				row[header[i]] = v
			}
		}
		if err := spec.CheckRow(row); err != nil {
			return nil, fmt.Errorf("%w: %s line %d: %v", ErrCSV, file, line, strings.TrimPrefix(err.Error(), ErrInvalidRow.Error()+": "))
		}
		k := spec.upsertKey(row)
		if first, dup := lines[k]; dup {
			return nil, fmt.Errorf("%w: %s line %d: same key and effective_from as line %d; keep one", ErrCSV, file, line, first)
		}
		lines[k] = line
		rows = append(rows, row)
	}
	return rows, nil
}

// csvErr rewrites encoding/csv's messages ("record on line 3: wrong number
// of fields") into the file-and-line form of the rest.
func csvErr(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Errorf("line %d: %v", pe.Line, pe.Err)
	}
	return err
}

// WriteCSV writes rows with the spec's columns as header.
func WriteCSV(w io.Writer, spec Spec, rows []Row) error {
	cw := csv.NewWriter(w)
	cols := spec.Columns()
	if err := cw.Write(cols); err != nil {
		return err
	}
	rec := make([]string, len(cols))
	for _, r := range rows {
		for i, c := range cols {
			rec[i] = r[c]
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// CheckRows validates rows as a whole table: every row, and no two rows
// with the same key and effective_from.
func CheckRows(spec Spec, rows []Row) error {
	seen := map[string]int{}
	for i, r := range rows {
		if err := spec.CheckRow(r); err != nil {
			return fmt.Errorf("rows[%d]: %w", i, err)
		}
		k := spec.upsertKey(r)
		if j, dup := seen[k]; dup {
			return fmt.Errorf("%w: rows[%d]: same key and effective_from as rows[%d]", ErrInvalidRow, i, j)
		}
		seen[k] = i
	}
	return nil
}
