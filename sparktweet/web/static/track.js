// Turns the tracking form into a /tickets/<id> link (no inline script: the CSP forbids it).
document.getElementById("track").addEventListener("submit", function (event) {
  event.preventDefault();
  var id = this.elements.id.value.trim();
  if (id) { window.location = this.dataset.base + encodeURIComponent(id); }
});
