// The seavl pages: one ES module for all of them, no framework and no build step.
// Each page's <body data-page="..."> names the function below that runs it. Every text a person
// reads comes from the message catalogue (messages/<language>.json); data from the API is only
// ever put on the page as text (textContent), never as markup.

const MAX_IMAGE_BYTES = 10 * 1024 * 1024; // the gateway's default images.max_bytes
const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];
const LANGUAGES = ["en", "id"];
const LANGUAGE_KEY = "seavl.language";
const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const ROLE_RANK = { contributor: 0, validator: 1, admin: 2 };
const POLL_INTERVAL_MS = 1000;
const POLL_LIMIT_MS = 10 * 60 * 1000;
const PAGE_SIZE = 20;
const TEXT_INPUT_TYPES = new Set(["text", "email", "password", "search", "number", "url", "tel"]);

const session = { account: null, csrfToken: null };
let messages = {};
let language = "en";

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/** A call to the gateway's API with the session cookie (and the CSRF token on changes). */
async function api(method, path, { json, form } = {}) {
  const headers = { Accept: "application/json" };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  if (UNSAFE_METHODS.has(method) && session.csrfToken) {
    headers["X-CSRF-Token"] = session.csrfToken;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "network", t("error.network"), null);
  }
  if (response.status === 204) return { status: 204, data: null };
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = data?.error ?? {};
    throw new ApiError(
      response.status,
      error.code ?? "http_error",
      error.message ?? `HTTP ${response.status}`,
      error.field ?? null,
    );
  }
  return { status: response.status, data };
}

// ---------------------------------------------------------------- messages

function has(key) {
  return Object.hasOwn(messages, key);
}

/** The message `key` in the page's language, with `{name}` filled from `params`. */
function t(key, params = {}) {
  if (!has(key)) {
    console.error(`seavl: the catalogue has no message "${key}"`);
    return key;
  }
  return messages[key].replace(/\{(\w+)\}/g, (whole, name) =>
    Object.hasOwn(params, name) ? String(params[name]) : whole,
  );
}

/** Texts of the elements under `root` that name a message (data-i18n and its kin). */
function translate(root) {
  for (const node of root.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll("[data-i18n-alt]")) node.alt = t(node.dataset.i18nAlt);
  for (const node of root.querySelectorAll("[data-i18n-aria-label]")) {
    node.setAttribute("aria-label", t(node.dataset.i18nAriaLabel));
  }
}

/** The switcher's choice, else the account's language, else the browser's, else English. */
function pickLanguage() {
  const chosen = localStorage.getItem(LANGUAGE_KEY);
  if (LANGUAGES.includes(chosen)) return chosen;
  if (LANGUAGES.includes(session.account?.language)) return session.account.language;
  for (const tag of navigator.languages ?? [navigator.language]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

async function loadMessages(wanted) {
  const response = await fetch(`/pages/assets/messages/${wanted}.json`, {
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`no message catalogue for ${wanted}`);
  return response.json();
}

// ---------------------------------------------------------------- formatting

function formatNumber(value, digits = 0, fixed = false) {
  return new Intl.NumberFormat(language, {
    maximumFractionDigits: digits,
    minimumFractionDigits: fixed ? digits : 0,
  }).format(value);
}

function formatDate(iso) {
  return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" }).format(
    new Date(iso),
  );
}

function formatMegabytes(bytes) {
  return formatNumber(bytes / (1024 * 1024), 2);
}

/** A relevance score (a mean cosine) on the paper's scale: ×100, tiers from 51.5. */
function formatScore(score) {
  return t("result.score_value", { score: formatNumber(score * 100, 1, true) });
}

function countryName(code) {
  return has(`country.${code}`) ? t(`country.${code}`) : code;
}

function rewardName(reward) {
  return has(`reward.${reward}`) ? t(`reward.${reward}`) : reward;
}

function optionalText(key, value) {
  if (value === null || value === undefined || value === "") return "–";
  return has(`${key}.${value}`) ? t(`${key}.${value}`) : String(value);
}

/** What seavl's privacy pass found before the image was stored: validators flag what it missed. */
function privacyText(privacy) {
  if (privacy === null || privacy === undefined) return t("privacy.not_checked");
  if (privacy.faces === 0 && privacy.plates === 0) return t("privacy.none_found");
  const found = t("privacy.found", {
    faces: formatNumber(privacy.faces),
    plates: formatNumber(privacy.plates),
  });
  return `${found} · ${t(privacy.blurred ? "privacy.blurred" : "privacy.flagged")}`;
}

// ---------------------------------------------------------------- the DOM

function byId(id) {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found;
}

function element(tag, properties = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else node[name] = value;
  }
  node.append(...children);
  return node;
}

function fromTemplate(id) {
  const fragment = byId(id).content.cloneNode(true);
  translate(fragment);
  return fragment.firstElementChild;
}

function slot(root, name) {
  return root.querySelector(`[data-slot="${name}"]`);
}

/** Tables that become one card per row on a narrow screen: each cell names its column. */
function labelCells(table) {
  const headings = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.cells].forEach((cell, index) => {
      cell.dataset.label = headings[index] ?? "";
    });
  }
}

function showPageError(error) {
  const target = document.querySelector(".page-error");
  if (target === null) throw error;
  target.textContent = errorText(error);
}

function sleep(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

// ---------------------------------------------------------------- forms

/** The catalogue's words for an error code, else the API's own message. */
function errorText(error) {
  if (!(error instanceof ApiError)) return String(error.message ?? error);
  const key = `error.${error.code}`;
  return has(key) ? t(key) : error.message;
}

function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error, .form-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function clearFieldError(form, field) {
  const target = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  if (target !== null) target.textContent = "";
  for (const control of form.querySelectorAll(`[name="${CSS.escape(field)}"]`)) {
    control.removeAttribute("aria-invalid");
  }
}

/** `text` next to the form's field `field`; false when the form has no such field. */
function showFieldError(form, field, text) {
  const target = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
  if (target === null) return false;
  target.textContent = text;
  for (const control of form.querySelectorAll(`[name="${CSS.escape(field)}"]`)) {
    control.setAttribute("aria-invalid", "true");
  }
  return true;
}

function showFormError(form, text) {
  form.querySelector(".form-error").textContent = text;
}

/** An API error next to the field it names (`answers.0.quality` names `answers`), or on top. */
function showError(form, error) {
  const field = error instanceof ApiError ? error.field?.split(".")[0] : null;
  const text = errorText(error);
  if (!(field && showFieldError(form, field, text))) showFormError(form, text);
}

function problemOf(control) {
  const validity = control.validity;
  if (validity.valueMissing) {
    if (control.type === "checkbox") return t("validation.accept");
    if (control.type === "radio" || control.tagName === "SELECT") return t("validation.choose");
    if (control.type === "file") return t("validation.file");
    return t("validation.required");
  }
  if (validity.customError) return control.validationMessage;
  if (validity.typeMismatch) return t("validation.email");
  if (validity.tooShort) return t("validation.too_short", { min: control.minLength });
  if (validity.tooLong) return t("validation.too_long", { max: control.maxLength });
  if (validity.patternMismatch) return t(control.dataset.patternMessage ?? "validation.pattern");
  return null;
}

/** The browser's own checks (required, type, length, pattern) with our words, shown next to
 * each field; true when the form may be sent. */
function validate(form) {
  clearErrors(form);
  const shown = new Set();
  let first = null;
  for (const control of form.elements) {
    if (!control.name || control.disabled || shown.has(control.name)) continue;
    const problem = problemOf(control);
    if (problem === null) continue;
    shown.add(control.name);
    showFieldError(form, control.name, problem);
    first ??= control;
  }
  for (const group of form.querySelectorAll("[data-required-group]")) {
    const name = group.dataset.requiredGroup;
    if (group.querySelector(`input[name="${CSS.escape(name)}"]:checked`) !== null) continue;
    showFieldError(form, name, t("validation.choose_one"));
    first ??= group.querySelector("input");
  }
  first?.focus();
  return first === null;
}

/** Runs `send` when the form is valid, one at a time; an API error shows in the form. */
function onSubmit(form, send) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (form.dataset.busy === "true" || !validate(form)) return;
    const button = form.querySelector("[type=submit]");
    form.dataset.busy = "true";
    form.setAttribute("aria-busy", "true");
    button.disabled = true;
    try {
      await send(new FormData(form));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showError(form, error);
    } finally {
      form.dataset.busy = "false";
      form.removeAttribute("aria-busy");
      button.disabled = false;
    }
  });
}

/** A file input that refuses too big or unknown files before anything is sent, and shows the
 * chosen image (a blob: URL, never uploaded to see it). */
function attachImagePicker(form, input, preview, sizeText = null) {
  let previewUrl = null;
  input.addEventListener("change", () => {
    clearFieldError(form, input.name);
    input.setCustomValidity("");
    if (previewUrl !== null) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    preview.hidden = true;
    preview.removeAttribute("src");
    const file = input.files[0];
    if (sizeText !== null) sizeText.textContent = "";
    if (file === undefined) return;
    if (sizeText !== null) {
      sizeText.textContent = t("submit.size", {
        size: formatMegabytes(file.size),
        max: formatMegabytes(MAX_IMAGE_BYTES),
      });
    }
    let problem = "";
    if (file.size > MAX_IMAGE_BYTES) {
      problem = t("submit.too_large", { max: formatMegabytes(MAX_IMAGE_BYTES) });
    } else if (file.type && !IMAGE_TYPES.includes(file.type)) {
      problem = t("submit.wrong_type");
    }
    input.setCustomValidity(problem);
    if (problem) {
      showFieldError(form, input.name, problem);
      return;
    }
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
  });
}

function nextPage() {
  const next = new URLSearchParams(location.search).get("next");
  if (next !== null && /^\/pages\/[a-z-]+$/.test(next)) return next;
  const role = session.account?.role;
  if (role === "admin") return "/pages/admin";
  if (role === "validator") return "/pages/review";
  return "/pages/submit";
}

// ---------------------------------------------------------------- header

const NAVIGATION = [
  { page: "submit", least: "contributor" },
  { page: "mine", least: "contributor" },
  { page: "screening", least: "contributor", only: "contributor" },
  { page: "review", least: "validator" },
  { page: "leaderboard", least: null },
  { page: "admin", least: "admin" },
];

function allowed(least, only = null) {
  if (least === null) return true;
  const role = session.account?.role;
  if (role === undefined) return false;
  if (only !== null) return role === only;
  return ROLE_RANK[role] >= ROLE_RANK[least];
}

function buildHeader(current) {
  const header = byId("site-header");
  header.replaceChildren();
  const links = element("ul");
  for (const item of NAVIGATION.filter((entry) => allowed(entry.least, entry.only))) {
    const link = element("a", { href: `/pages/${item.page}`, textContent: t(`nav.${item.page}`) });
    if (item.page === current) link.setAttribute("aria-current", "page");
    links.append(element("li", {}, link));
  }
  if (session.account === null) {
    const link = element("a", { href: "/pages/sign-in", textContent: t("nav.sign_in") });
    if (current === "sign-in") link.setAttribute("aria-current", "page");
    links.append(element("li", {}, link));
  }
  const navigation = element("nav", {}, links);
  navigation.setAttribute("aria-label", t("nav.label"));

  const switcher = element("select", { id: "language-switch", name: "language-switch" });
  for (const code of LANGUAGES) {
    switcher.append(
      element("option", { value: code, textContent: t(`language.${code}`), selected: code === language }),
    );
  }
  switcher.addEventListener("change", () => {
    localStorage.setItem(LANGUAGE_KEY, switcher.value);
    location.reload();
  });
  const account = element("div", { className: "account-bar" });
  if (session.account !== null) {
    account.append(
      element("span", {
        id: "whoami",
        textContent: t("nav.signed_in_as", {
          name: session.account.name,
          role: t(`role.${session.account.role}`),
        }),
      }),
    );
    const signOut = element("button", {
      id: "sign-out",
      type: "button",
      className: "link-button",
      textContent: t("nav.sign_out"),
    });
    signOut.addEventListener("click", async () => {
      try {
        await api("DELETE", "/v1/sessions");
      } finally {
        location.assign("/pages/sign-in");
      }
    });
    account.append(signOut);
  }
  account.append(
    element("label", { htmlFor: "language-switch", textContent: t("nav.language") }),
    switcher,
  );
  header.append(
    element("a", { className: "brand", href: "/", textContent: t("app.name") }),
    navigation,
    account,
  );
}

/** A notice on a page the visitor may not use yet; false when they may. */
function requireRole(page, least, only = null) {
  if (allowed(least, only)) return true;
  const notice = element("p", { id: "access-notice", className: "notice" });
  if (session.account === null) {
    const link = element("a", {
      href: `/pages/sign-in?next=${encodeURIComponent(`/pages/${page}`)}`,
      textContent: t("notice.sign_in_link"),
    });
    notice.append(t("notice.sign_in"), " ", link);
  } else {
    notice.append(t(`notice.needs_${least}`));
  }
  byId("main").querySelector("h1").after(notice);
  return false;
}

// ---------------------------------------------------------------- sign-in page

async function signInPage() {
  const signInForm = byId("sign-in-form");
  const signUpForm = byId("sign-up-form");
  byId("sign-up-language").value = language;
  if (session.account !== null) {
    const notice = byId("signed-in-notice");
    notice.append(
      t("signin.already", { name: session.account.name }),
      " ",
      element("a", { href: nextPage(), textContent: t("signin.continue") }),
    );
    notice.hidden = false;
  }
  async function signIn(email, password) {
    const { data } = await api("POST", "/v1/sessions", { json: { email, password } });
    session.account = data.account;
    session.csrfToken = data.csrf_token;
    localStorage.removeItem(LANGUAGE_KEY); // the account's own language from now on
    location.assign(nextPage());
  }
  onSubmit(signInForm, (values) => signIn(values.get("email"), values.get("password")));
  onSubmit(signUpForm, async (values) => {
    const account = Object.fromEntries(
      ["name", "email", "password", "country", "language"].map((name) => [name, values.get(name)]),
    );
    await api("POST", "/v1/accounts", { json: account });
    await signIn(account.email, account.password);
  });
}

// ---------------------------------------------------------------- submit page

function renderResult(image) {
  byId("result-status").textContent = t(`status.${image.status}`);
  byId("result-status").dataset.value = image.status;
  byId("result-score").textContent = image.score == null ? "–" : formatScore(image.score);
  byId("result-tier").textContent = optionalText("tier", image.tier);
  const accepted = image.accepted;
  byId("result-accepted").textContent =
    accepted == null ? "–" : t(accepted ? "result.relevant" : "result.not_relevant");
  const duplicate = image.is_duplicate;
  byId("result-duplicate").textContent =
    duplicate == null ? "–" : t(duplicate ? "result.is_duplicate" : "result.is_new");
  const finished = image.status === "done" || image.status === "failed";
  byId("result-message").textContent = finished
    ? t(image.status === "done" ? "result.done" : "result.failed")
    : t("result.processing");
}

async function submitPage() {
  const form = byId("submit-form");
  const result = byId("result");
  attachImagePicker(form, byId("image"), byId("image-preview"), byId("image-size"));
  const own = session.account?.country;
  if (own) {
    const box = form.querySelector(`input[name="countries"][value="${CSS.escape(own)}"]`);
    if (box !== null) box.checked = true;
  }
  onSubmit(form, async (values) => {
    const { status, data } = await api("POST", "/v1/images", { form: values });
    form.hidden = true;
    result.hidden = false;
    renderResult(data);
    if (status === 200) byId("result-message").textContent = t("result.sent_before");
    const deadline = Date.now() + POLL_LIMIT_MS;
    let image = data;
    while (!["done", "failed"].includes(image.status) && Date.now() < deadline) {
      await sleep(POLL_INTERVAL_MS);
      image = (await api("GET", `/v1/images/${encodeURIComponent(image.id)}`)).data;
      renderResult(image);
    }
  });
  byId("submit-another").addEventListener("click", () => {
    form.reset();
    byId("image").dispatchEvent(new Event("change"));
    result.hidden = true;
    form.hidden = false;
    byId("image").focus();
  });
}

// ---------------------------------------------------------------- my submissions

function renderFlag(target, value) {
  const state = value === true ? "true" : value === false ? "false" : "null";
  target.dataset.value = state;
  target.className = `flag flag-${state}`;
  target.textContent = t(`flag.value_${state}`);
}

function renderThresholds(list, thresholds, points = null) {
  list.replaceChildren();
  for (const threshold of thresholds) {
    const reward = rewardName(threshold.reward);
    let text = t("points.threshold", { points: formatNumber(threshold.points), reward });
    if (points !== null) {
      const missing = threshold.points - points;
      text +=
        " — " +
        (missing <= 0 ? t("points.reached") : t("points.to_go", { points: formatNumber(missing, 1) }));
    }
    list.append(element("li", { textContent: text }));
  }
}

async function minePage() {
  let offset = 0;
  const list = byId("submissions");
  const previous = byId("mine-previous");
  const next = byId("mine-next");

  const { data: points } = await api("GET", "/v1/me/points");
  byId("my-points").textContent = formatNumber(points.points, 1);
  byId("my-counts").textContent = t("points.counts", {
    submissions: formatNumber(points.submissions),
    reviews: formatNumber(points.reviews),
  });
  renderThresholds(byId("my-thresholds"), points.thresholds, points.points);

  async function show() {
    const query = new URLSearchParams({ mine: "true", limit: PAGE_SIZE, offset });
    const { data } = await api("GET", `/v1/images?${query}`);
    list.replaceChildren();
    for (const image of data.items) {
      const item = fromTemplate("submission-template");
      item.dataset.imageId = image.id;
      const thumbnail = slot(item, "thumbnail");
      thumbnail.addEventListener("error", () => {
        thumbnail.hidden = true;
      });
      thumbnail.src = `/v1/images/${encodeURIComponent(image.id)}/content`;
      slot(item, "caption_en").textContent = image.caption_en ?? "";
      slot(item, "created_at").textContent = formatDate(image.created_at);
      slot(item, "status").textContent = t(`status.${image.status}`);
      slot(item, "score").textContent =
        image.score == null ? "–" : `${formatScore(image.score)} (${optionalText("tier", image.tier)})`;
      const review = image.review ?? { count: 0, needed: 2 };
      slot(item, "reviews").textContent = t("review.progress", {
        count: formatNumber(review.count),
        needed: formatNumber(review.needed),
      });
      for (const flag of ["quality", "relevance", "caption_fit", "overall"]) {
        renderFlag(item.querySelector(`[data-flag="${flag}"]`), review[flag] ?? null);
      }
      slot(item, "points").textContent = formatNumber(image.points ?? 0, 1);
      list.append(item);
    }
    byId("mine-empty").hidden = data.total > 0;
    const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
    byId("mine-page").textContent = t("pager.position", {
      page: Math.floor(offset / PAGE_SIZE) + 1,
      pages,
    });
    previous.disabled = offset === 0;
    next.disabled = offset + PAGE_SIZE >= data.total;
    previous.closest(".pager").hidden = pages === 1;
  }
  previous.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE_SIZE);
    show().catch(showPageError);
  });
  next.addEventListener("click", () => {
    offset += PAGE_SIZE;
    show().catch(showPageError);
  });
  await show();
}

// ---------------------------------------------------------------- review page

// The key for each answer; relevance keys 1-5 are the form's options in order (the paper's
// "Option 1" is "unique to SEA", score 5).
const REVIEW_KEYS = {
  q: ["quality", "1"],
  w: ["quality", "0"],
  1: ["relevance", "5"],
  2: ["relevance", "4"],
  3: ["relevance", "3"],
  4: ["relevance", "2"],
  5: ["relevance", "1"],
  y: ["caption_fit", "yes"],
  n: ["caption_fit", "no"],
  u: ["caption_fit", "unsure"],
};
const REVIEW_TOGGLES = { p: "pii", s: "unsafe" };

function typingInto(target) {
  return (
    target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement ||
    (target instanceof HTMLInputElement && TEXT_INPUT_TYPES.has(target.type))
  );
}

async function reviewPage() {
  const form = byId("review-form");
  const area = byId("review-area");
  const empty = byId("review-empty");
  const status = byId("review-status");
  let current = null;

  function say(text) {
    status.textContent = text;
    status.hidden = text === "";
  }

  function show(image, leaseExpiresAt) {
    current = image;
    form.reset();
    clearErrors(form);
    const picture = byId("review-image");
    picture.src = `/v1/images/${encodeURIComponent(image.id)}/content`;
    picture.dataset.imageId = image.id;
    byId("review-caption-native").textContent = image.caption_native ?? "–";
    byId("review-caption-en").textContent = image.caption_en ?? "–";
    byId("review-native-language").textContent = optionalText("native", image.native_language);
    byId("review-location").textContent = image.location ?? "–";
    byId("review-countries").textContent = (image.countries ?? []).map(countryName).join(", ");
    byId("review-category").textContent = optionalText("category", image.category);
    byId("review-privacy").textContent = privacyText(image.privacy);
    const review = image.review ?? { count: 0, needed: 2 };
    byId("review-progress").textContent = `${t("review.progress", {
      count: formatNumber(review.count),
      needed: formatNumber(review.needed),
    })} · ${t("review.lease", { time: formatDate(leaseExpiresAt) })}`;
    area.hidden = false;
    empty.hidden = true;
  }

  async function loadNext() {
    const { status: code, data } = await api("GET", "/v1/reviews/next");
    if (code === 204) {
      current = null;
      area.hidden = true;
      empty.hidden = false;
      return;
    }
    show(data.image, data.lease_expires_at);
    window.scrollTo(0, 0);
  }

  document.addEventListener("keydown", (event) => {
    if (current === null || area.hidden || event.ctrlKey || event.metaKey || event.altKey) return;
    if (typingInto(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === "enter") {
      if (event.target instanceof HTMLButtonElement || event.target instanceof HTMLAnchorElement) {
        return; // the focused control does its own thing
      }
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (Object.hasOwn(REVIEW_KEYS, key)) {
      const [name, value] = REVIEW_KEYS[key];
      form.querySelector(`input[name="${name}"][value="${value}"]`).checked = true;
      clearFieldError(form, name);
      event.preventDefault();
    } else if (Object.hasOwn(REVIEW_TOGGLES, key)) {
      const box = form.querySelector(`input[name="${REVIEW_TOGGLES[key]}"]`);
      box.checked = !box.checked;
      event.preventDefault();
    }
  });

  onSubmit(form, async (values) => {
    const body = {
      quality: Number(values.get("quality")),
      relevance: Number(values.get("relevance")),
      caption_fit: values.get("caption_fit"),
      pii: values.has("pii"),
      unsafe: values.has("unsafe"),
      comment: values.get("comment").trim() || null,
    };
    const reviewed = current.id;
    try {
      await api("POST", `/v1/images/${encodeURIComponent(reviewed)}/reviews`, { json: body });
      say(t("review.sent"));
    } catch (error) {
      const passOver = ["already_reviewed", "review_not_needed", "own_image"];
      if (!(error instanceof ApiError && passOver.includes(error.code))) throw error;
      say(errorText(error));
    }
    await loadNext();
  });

  byId("review-refresh").addEventListener("click", () => {
    say("");
    loadNext().catch(showPageError);
  });
  await loadNext();
}

// ---------------------------------------------------------------- leaderboard

async function leaderboardPage() {
  const { data } = await api("GET", "/v1/leaderboard?limit=50");
  byId("leaderboard-phase").textContent = t("leaderboard.phase", { phase: data.phase });
  renderThresholds(byId("thresholds"), data.thresholds);
  const rows = byId("leaderboard-rows");
  rows.replaceChildren();
  for (const entry of data.items) {
    const row = element(
      "tr",
      { dataset: { accountId: String(entry.account_id) } },
      element("td", { textContent: formatNumber(entry.rank) }),
      element("td", { textContent: entry.name }),
      element("td", { className: "wide-only", textContent: countryName(entry.country) }),
      element("td", { textContent: formatNumber(entry.points, 1), dataset: { points: entry.points } }),
      element("td", { textContent: formatNumber(entry.submissions) }),
      element("td", { textContent: formatNumber(entry.reviews) }),
    );
    if (entry.account_id === session.account?.id) row.classList.add("me");
    rows.append(row);
  }
  labelCells(byId("leaderboard-table"));
  byId("leaderboard-empty").hidden = data.items.length > 0;
  byId("leaderboard-table").hidden = data.items.length === 0;
}

// ---------------------------------------------------------------- screening

async function screeningPage() {
  const form = byId("screening-form");
  const result = byId("screening-result");
  const { data } = await api("GET", "/v1/screening");
  byId("screening-pass-score").textContent = t("screening.pass_score", {
    percent: formatNumber(data.pass_score * 100),
  });
  if (session.account.role !== "contributor") {
    byId("screening-done").hidden = false;
    return;
  }
  if (data.items.length === 0) {
    byId("screening-empty").hidden = false;
    return;
  }
  const list = byId("screening-items");
  data.items.forEach((question, index) => {
    const item = fromTemplate("screening-item-template");
    item.dataset.itemId = String(question.id);
    item.prepend(element("h2", { textContent: t("screening.question", { number: index + 1 }) }));
    slot(item, "image").src = question.image_url;
    slot(item, "caption_en").textContent = question.caption_en;
    for (const input of item.querySelectorAll("input[data-field]")) {
      input.name = `${input.dataset.field}-${question.id}`;
    }
    for (const target of item.querySelectorAll("[data-error-slot]")) {
      target.dataset.errorFor = `${target.dataset.errorSlot}-${question.id}`;
    }
    list.append(item);
  });
  form.hidden = false;
  onSubmit(form, async (values) => {
    const answers = data.items.map((question) => ({
      item_id: question.id,
      quality: Number(values.get(`quality-${question.id}`)),
      relevance: Number(values.get(`relevance-${question.id}`)),
      caption_fit: values.get(`caption_fit-${question.id}`),
    }));
    const { data: outcome } = await api("POST", "/v1/screening/answers", { json: { answers } });
    result.hidden = false;
    byId("screening-score").textContent = t("screening.score", {
      percent: formatNumber(outcome.score * 100),
    });
    const said = byId("screening-outcome");
    said.replaceChildren();
    said.dataset.passed = String(outcome.passed);
    if (outcome.passed) {
      session.account.role = outcome.role;
      buildHeader("screening");
      form.hidden = true;
      said.append(
        t("screening.passed"),
        " ",
        element("a", { href: "/pages/review", textContent: t("screening.start_reviewing") }),
      );
    } else {
      said.append(t("screening.failed"));
    }
  });
}

// ---------------------------------------------------------------- admin

/** A button that asks for a second click before it does something that cannot be undone. */
function confirmingButton(label, confirmLabel, action) {
  const button = element("button", { type: "button", className: "danger", textContent: label });
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.textContent = confirmLabel;
      return;
    }
    button.disabled = true;
    await action();
  });
  return button;
}

function sectionError(section, error) {
  if (!(error instanceof ApiError)) throw error;
  section.querySelector(".form-error").textContent = errorText(error);
}

async function adminAccounts(names) {
  const section = byId("accounts-section");
  const rows = byId("accounts-rows");
  let offset = 0;
  async function show() {
    const query = new URLSearchParams({ limit: 50, offset });
    const { data } = await api("GET", `/v1/accounts?${query}`);
    rows.replaceChildren();
    for (const account of data.items) {
      names.set(account.id, account.name);
      const id = `role-${account.id}`;
      const select = element("select", { id, name: "role" });
      for (const role of Object.keys(ROLE_RANK)) {
        select.append(
          element("option", {
            value: role,
            textContent: t(`role.${role}`),
            selected: role === account.role,
          }),
        );
      }
      select.disabled = account.id === session.account.id; // no admin locks themself out
      const said = element("p", { className: "field-error" });
      said.setAttribute("role", "status");
      select.setAttribute("aria-describedby", `${id}-status`);
      said.id = `${id}-status`;
      select.addEventListener("change", async () => {
        said.className = "field-error";
        said.textContent = "";
        try {
          const { data: saved } = await api("PATCH", `/v1/accounts/${account.id}`, {
            json: { role: select.value },
          });
          account.role = saved.role;
          said.className = "saved";
          said.textContent = t("admin.role_saved");
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          select.value = account.role;
          said.textContent = errorText(error);
        }
      });
      const label = element("label", {
        htmlFor: id,
        className: "visually-hidden",
        textContent: t("admin.role_of", { name: account.name }),
      });
      rows.append(
        element(
          "tr",
          { dataset: { accountId: String(account.id) } },
          element("td", { textContent: account.name }),
          element("td", { textContent: account.email }),
          element("td", { textContent: countryName(account.country) }),
          element("td", {}, element("div", {}, label, select, said)),
          element("td", { textContent: formatDate(account.created_at) }),
        ),
      );
    }
    labelCells(byId("accounts-table"));
    const pages = Math.max(1, Math.ceil(data.total / 50));
    byId("accounts-page").textContent = t("pager.position", {
      page: Math.floor(offset / 50) + 1,
      pages,
    });
    byId("accounts-page").closest(".pager").hidden = pages === 1;
    byId("accounts-previous").disabled = offset === 0;
    byId("accounts-next").disabled = offset + 50 >= data.total;
  }
  byId("accounts-previous").addEventListener("click", () => {
    offset = Math.max(0, offset - 50);
    show().catch((error) => sectionError(section, error));
  });
  byId("accounts-next").addEventListener("click", () => {
    offset += 50;
    show().catch((error) => sectionError(section, error));
  });
  await show().catch((error) => sectionError(section, error));
}

async function adminKeys(names) {
  const section = byId("keys-section");
  try {
    const { data } = await api("GET", "/v1/api-keys");
    const rows = byId("keys-rows");
    rows.replaceChildren();
    for (const key of data.items) {
      const state = element("td", {});
      const revoked = () => state.replaceChildren(t("admin.key_revoked"));
      if (key.revoked) {
        revoked();
      } else {
        state.append(
          confirmingButton(t("admin.revoke"), t("admin.revoke_confirm"), async () => {
            try {
              await api("DELETE", `/v1/api-keys/${key.id}`);
              revoked();
            } catch (error) {
              sectionError(section, error);
            }
          }),
        );
      }
      const owner = key.account_id == null ? "–" : names.get(key.account_id) ?? `#${key.account_id}`;
      rows.append(
        element(
          "tr",
          { dataset: { keyId: String(key.id) } },
          element("td", { textContent: `seavl_${key.prefix}_…` }),
          element("td", { textContent: key.name || "–" }),
          element("td", { textContent: t(`role.${key.role}`) }),
          element("td", { textContent: owner }),
          element("td", { textContent: formatDate(key.created_at) }),
          state,
        ),
      );
    }
    labelCells(byId("keys-table"));
    byId("keys-empty").hidden = data.items.length > 0;
    byId("keys-table").hidden = data.items.length === 0;
  } catch (error) {
    sectionError(section, error);
  }
}

function describeAnswers(item) {
  return [
    `${t("flag.quality")}: ${t(Number(item.quality) === 1 ? "review.quality_ok" : "review.quality_not_ok")}`,
    `${t("flag.relevance")}: ${optionalText("relevance", item.relevance)}`,
    `${t("flag.caption_fit")}: ${optionalText("caption_fit", item.caption_fit)}`,
  ].join(" · ");
}

async function adminScreening() {
  const section = byId("screening-section");
  const list = byId("screening-items-list");
  const form = byId("screening-item-form");
  async function show() {
    const { data } = await api("GET", "/v1/screening/items");
    list.replaceChildren();
    for (const item of data.items) {
      const remove = confirmingButton(t("admin.delete"), t("admin.delete_confirm"), async () => {
        try {
          await api("DELETE", `/v1/screening/items/${item.id}`);
          await show();
        } catch (error) {
          sectionError(section, error);
        }
      });
      const picture = element("img", { className: "thumbnail", alt: t("review.image_alt") });
      if (item.image_url) picture.src = item.image_url;
      list.append(
        element(
          "li",
          { className: "card screening-entry", dataset: { itemId: String(item.id) } },
          picture,
          element(
            "div",
            {},
            element("p", { className: "caption", textContent: item.caption_en }),
            element("p", { className: "hint", textContent: describeAnswers(item) }),
            remove,
          ),
        ),
      );
    }
    byId("screening-items-empty").hidden = data.items.length > 0;
  }
  attachImagePicker(form, byId("screening-image"), byId("screening-preview"));
  onSubmit(form, async (values) => {
    await api("POST", "/v1/screening/items", { form: values });
    form.reset();
    byId("screening-image").dispatchEvent(new Event("change"));
    await show();
  });
  await show().catch((error) => sectionError(section, error));
}

async function adminReferenceSets() {
  const section = byId("reference-sets-section");
  try {
    const { data } = await api("GET", "/v1/reference-sets");
    const rows = byId("reference-sets-rows");
    rows.replaceChildren();
    for (const set of data.sets) {
      const countries = Object.entries(set.countries ?? {})
        .map(([code, count]) => `${countryName(code)} ${formatNumber(count)}`)
        .join(", ");
      rows.append(
        element(
          "tr",
          { dataset: { setName: set.name } },
          element("td", { textContent: set.name }),
          element("td", { textContent: set.model }),
          element("td", {
            textContent: `${formatNumber(set.rho, 3)} (${optionalText("rho_source", set.rho_source)})`,
          }),
          element("td", { textContent: formatNumber(set.references) }),
          element("td", { textContent: countries || "–" }),
          element("td", { textContent: formatDate(set.created_at) }),
        ),
      );
    }
    labelCells(byId("reference-sets-table"));
    byId("reference-sets-empty").hidden = data.sets.length > 0;
    byId("reference-sets-table").hidden = data.sets.length === 0;
  } catch (error) {
    sectionError(section, error);
  }
}

async function adminPage() {
  const names = new Map();
  await adminAccounts(names); // first: the keys' table names their accounts
  await Promise.all([adminKeys(names), adminScreening(), adminReferenceSets()]);
}

// ---------------------------------------------------------------- start

const PAGES = {
  "sign-in": { run: signInPage, least: null },
  submit: { run: submitPage, least: "contributor" },
  mine: { run: minePage, least: "contributor" },
  review: { run: reviewPage, least: "validator" },
  leaderboard: { run: leaderboardPage, least: null },
  screening: { run: screeningPage, least: "contributor" },
  admin: { run: adminPage, least: "admin" },
};

async function start() {
  const page = document.body.dataset.page;
  try {
    const { data } = await api("GET", "/v1/me");
    session.account = data.account;
    session.csrfToken = data.csrf_token;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error; // not signed in: the page says what to do
  }
  language = pickLanguage();
  messages = await loadMessages(language);
  document.documentElement.lang = language;
  translate(document);
  buildHeader(page);
  const { run, least } = PAGES[page];
  // the submission form works without the API's answer: it says so when it is sent
  if (requireRole(page, least) || page === "submit") {
    try {
      await run();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showPageError(error);
    }
  }
  document.documentElement.dataset.ready = "true";
}

start();
