// Sorting (click a header; again to reverse) and filtering (one select per column) of every table marked
// `sortable`. Cells sort by their data-sort value when they have one (numbers), else by their text; blank cells
// sort last either way. Plain JavaScript: the page works offline and with no other file.
(function () {
  "use strict";

  function sortKey(cell) {
    const value = cell.getAttribute("data-sort");
    if (value !== null && value !== "") return { blank: false, number: true, value: parseFloat(value) };
    const text = cell.textContent.trim();
    return { blank: text === "", number: false, value: text.toLowerCase() };
  }

  function compare(a, b) {
    if (a.blank || b.blank) return a.blank === b.blank ? 0 : a.blank ? 1 : -1;
    if (a.number && b.number) return a.value - b.value;
    return String(a.value).localeCompare(String(b.value), undefined, { numeric: true });
  }

  function sortBy(table, header, index) {
    const body = table.tBodies[0];
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const rows = Array.from(body.rows).map((row, position) => ({ row, position, key: sortKey(row.cells[index]) }));
    rows.sort((a, b) => {
      const blankLast = a.key.blank !== b.key.blank;
      const order = blankLast ? compare(a.key, b.key) : (ascending ? 1 : -1) * compare(a.key, b.key);
      return order || a.position - b.position;
    });
    rows.forEach((item) => body.appendChild(item.row));
  }

  function applyFilters(table, selects) {
    let shown = 0;
    Array.from(table.tBodies[0].rows).forEach((row) => {
      const keep = selects.every((select) => !select.value || row.getAttribute("data-" + select.name) === select.value);
      row.hidden = !keep;
      if (keep) shown += 1;
    });
    const counter = document.getElementById(table.id + "-shown");
    if (counter) counter.textContent = String(shown);
  }

  document.querySelectorAll("table.sortable").forEach((table) => {
    Array.from(table.tHead.rows[0].cells).forEach((header, index) => {
      header.addEventListener("click", () => sortBy(table, header, index));
    });
    const selects = Array.from(document.querySelectorAll('select[data-filters="' + table.id + '"]'));
    selects.forEach((select) => select.addEventListener("change", () => applyFilters(table, selects)));
  });
})();
