/** The HTTP status of a Docker API error (404 gone, 304 no change, 409 conflict). */
export const statusCode = (err: unknown): number | undefined => (err as { statusCode?: number }).statusCode;
