// passkey.js: the passkey ceremonies (sign-in, enrolment, approving and
// rejecting with a passkey). This placeholder keeps the route and the
// pages' <script> tag working until the sign-in half of the console
// provides the real file.
