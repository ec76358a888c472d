//! Writing EC2 Query XML: success documents and error documents.
//!
//! EC2 responses are flat and regular (elements, `<item>` lists, no attributes besides the
//! namespace), so a small writer that escapes text is all that is needed.

use quick_xml::escape::escape;

/// The EC2 API namespace of version 2016-11-15.
pub const EC2_NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Builds one XML document.
#[derive(Debug, Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    /// Starts `<{action}Response xmlns=...><requestId>..</requestId>`.
    pub fn response(action: &str, request_id: &str) -> XmlWriter {
        let mut w = XmlWriter {
            buf: String::with_capacity(1024),
        };
        w.buf
            .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<");
        w.buf.push_str(action);
        w.buf.push_str("Response xmlns=\"");
        w.buf.push_str(EC2_NAMESPACE);
        w.buf.push_str("\">");
        w.leaf("requestId", request_id);
        w
    }

    /// Closes the response element and returns the document.
    pub fn finish(mut self, action: &str) -> String {
        self.buf.push_str("</");
        self.buf.push_str(action);
        self.buf.push_str("Response>");
        self.buf
    }

    /// Opens an element.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// Closes an element.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// `<tag>text</tag>`, text escaped.
    pub fn leaf(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.buf.push_str(&escape(text));
        self.close(tag)
    }

    /// A leaf only when there is a value.
    pub fn opt_leaf(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(text) = text {
            self.leaf(tag, text);
        }
        self
    }

    /// `<tag>true|false</tag>`.
    pub fn bool_leaf(&mut self, tag: &str, value: bool) -> &mut Self {
        self.leaf(tag, if value { "true" } else { "false" })
    }

    /// A number leaf.
    pub fn num_leaf(&mut self, tag: &str, value: i64) -> &mut Self {
        self.leaf(tag, &value.to_string())
    }

    /// `<tag><value>text</value></tag>`, or `<tag/>` when there is no value (attribute answers).
    pub fn attribute_value(&mut self, tag: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => {
                self.open(tag);
                self.leaf("value", v);
                self.close(tag)
            }
            None => {
                self.buf.push('<');
                self.buf.push_str(tag);
                self.buf.push_str("/>");
                self
            }
        }
    }

    /// An empty element `<tag/>`.
    pub fn empty(&mut self, tag: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        self.buf.push_str("/>");
        self
    }
}

/// The EC2 error document.
pub fn error_document(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_root_is_action_response_with_namespace() {
        let mut w = XmlWriter::response("DescribeImages", "r-1");
        w.open("imagesSet").close("imagesSet");
        let doc = w.finish("DescribeImages");
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeImagesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>r-1</requestId><imagesSet></imagesSet></DescribeImagesResponse>"
        );
    }

    #[test]
    fn leaf_special_characters_are_escaped() {
        let mut w = XmlWriter::default();
        w.leaf("description", "a<b & \"c\"");
        assert_eq!(
            w.buf,
            "<description>a&lt;b &amp; &quot;c&quot;</description>"
        );
    }

    #[test]
    fn error_document_has_capital_d_request_id() {
        let doc = error_document("InvalidAction", "x", "r-2");
        assert!(doc.contains("<Code>InvalidAction</Code>"));
        assert!(doc.contains("<RequestID>r-2</RequestID>"));
    }
}
