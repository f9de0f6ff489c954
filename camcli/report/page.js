(function () {
  "use strict";
  var grid = document.getElementById("cards");
  var cards = Array.prototype.slice.call(grid.querySelectorAll(".card"));
  var fClass = document.getElementById("f-class");
  var fMethod = document.getElementById("f-method");
  var fEmpty = document.getElementById("f-empty");
  var sort = document.getElementById("sort");
  var count = document.getElementById("count");

  function applyFilters() {
    var cls = fClass.value, method = fMethod.value, emptyOnly = fEmpty.checked, shown = 0;
    cards.forEach(function (card) {
      var anyMethod = false, anyEmpty = false;
      card.querySelectorAll("figure[data-method]").forEach(function (fig) {
        var match = !method || fig.dataset.method === method;
        fig.hidden = !match;
        if (match) { anyMethod = true; if (fig.dataset.empty === "1") anyEmpty = true; }
      });
      var visible = (!cls || card.dataset.top1 === cls) && (!method || anyMethod) && (!emptyOnly || anyEmpty);
      card.hidden = !visible;
      if (visible) shown += 1;
    });
    count.textContent = shown + " of " + cards.length + " images";
  }

  function applySort() {
    var key = sort.value;
    var sorted = cards.slice().sort(function (a, b) {
      if (key !== "name") {
        var d = parseFloat(a.dataset.score) - parseFloat(b.dataset.score);
        if (d !== 0) return key === "score-asc" ? d : -d;
      }
      return a.dataset.name < b.dataset.name ? -1 : a.dataset.name > b.dataset.name ? 1 : 0;
    });
    grid.replaceChildren.apply(grid, sorted);  // one move: appending cards one by one is quadratic
  }

  function closeLightbox() {
    var box = document.getElementById("lightbox");
    if (box) box.remove();
  }

  function openLightbox(href, caption) {
    closeLightbox();
    var box = document.createElement("div");
    box.id = "lightbox";
    var img = document.createElement("img");
    img.src = href;
    img.alt = caption;
    var text = document.createElement("p");
    text.textContent = caption + " (click or Esc to close)";
    box.appendChild(img);
    box.appendChild(text);
    box.addEventListener("click", closeLightbox);
    document.body.appendChild(box);
  }

  // a.zoom: a thumbnail; circle[data-href]: a point of an audit scatter plot (its <title> is the caption)
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.zoom, circle[data-href]") : null;
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openLightbox(link.getAttribute("href") || link.dataset.href, link.dataset.caption || link.textContent);
  });
  // Hovering a scatter point shows its overlay beside the plot, loaded only then.
  document.addEventListener("mouseover", function (event) {
    var point = event.target.closest ? event.target.closest("circle[data-href]") : null;
    var box = point ? point.closest(".scatter-wrap").querySelector(".preview") : null;
    if (!box) return;
    var img = box.querySelector("img") || box.insertBefore(document.createElement("img"), box.firstChild);
    img.src = point.dataset.thumb || point.dataset.href;
    img.alt = point.textContent;
    box.querySelector("figcaption").textContent = point.textContent;
  });
  document.addEventListener("keydown", function (event) { if (event.key === "Escape") closeLightbox(); });
  [fClass, fMethod, fEmpty].forEach(function (el) { el.addEventListener("change", applyFilters); });
  sort.addEventListener("change", applySort);
  applyFilters();
})();
