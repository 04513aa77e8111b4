/**
 * The body of a call to an AI service for its declared operation: FHIR R4 operations (`$name`)
 * take their inputs in a Parameters resource (http.html#operation), with the Bundle as parameter
 * `bundle`; a plain endpoint takes the Bundle itself. The text is the one JSON.stringify gives for
 * that Parameters object (members in the same order, no spaces).
 */
export function operationBody(operation: string, bundleJson: string): string {
  const [before, after] = operationWrap(operation);
  return before + bundleJson + after;
}

/** What goes before and after the Bundle's JSON in the body for `operation`. */
export function operationWrap(operation: string): [string, string] {
  return operation.includes('$') ? ['{"resourceType":"Parameters","parameter":[{"name":"bundle","resource":', '}]}'] : ['', ''];
}
