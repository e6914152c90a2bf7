// The preferences page: when the reader has not set a time zone ("Not set" is
// selected), preselect the browser's own zone if the list offers it, and say so.
// Nothing is saved until the reader presses "Save preferences"; without this
// script the page works the same and the select just stays on "Not set".
(function () {
  "use strict";
  var select = document.getElementById("time_zone");
  if (!select || select.value !== "") {
    return;
  }
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    return;
  }
  for (var i = 0; i < select.options.length; i++) {
    if (zone && select.options[i].value === zone) {
      select.value = zone;
      var note = document.getElementById("time-zone-detected");
      if (note) {
        note.hidden = false;
      }
      return;
    }
  }
})();
