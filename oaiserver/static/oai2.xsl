<?xml version="1.0" encoding="UTF-8"?>
<!-- Renders OAI-PMH responses as HTML in browsers that still apply XSLT. The same view is
     rendered on the server at /oai/view, for browsers that no longer do. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:oai="http://www.openarchives.org/OAI/2.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    exclude-result-prefixes="oai dc">
  <!-- about:legacy-compat: the doctype an XSLT 1.0 processor can write for HTML5 (standards mode). -->
  <xsl:output method="html" encoding="UTF-8" indent="yes" doctype-system="about:legacy-compat"/>
  <!-- What the page is about: the verb, or for an answer that echoes none (badVerb,
       badArgument), its error codes. -->
  <xsl:variable name="topic">
    <xsl:choose>
      <xsl:when test="normalize-space(/oai:OAI-PMH/oai:request/@verb) != ''">
        <xsl:value-of select="/oai:OAI-PMH/oai:request/@verb"/>
      </xsl:when>
      <xsl:otherwise>
        <xsl:text>OAI-PMH error</xsl:text>
        <xsl:for-each select="/oai:OAI-PMH/oai:error"><xsl:text> </xsl:text><xsl:value-of select="@code"/></xsl:for-each>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:variable>
  <xsl:template match="/">
    <html lang="en">
      <head>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title><xsl:value-of select="$topic"/></title>
        <link rel="stylesheet" href="static/style.css"/>
      </head>
      <body>
        <header class="site"><a href="./">Repository home</a></header>
        <main>
          <h1><xsl:value-of select="$topic"/></h1>
          <p class="meta">Response date <xsl:value-of select="oai:OAI-PMH/oai:responseDate"/></p>
          <xsl:apply-templates select="oai:OAI-PMH/oai:error"/>
          <xsl:apply-templates select="oai:OAI-PMH/oai:Identify/*[not(self::oai:description)]"/>
          <xsl:apply-templates select="//oai:metadataFormat | //oai:set | //oai:record | oai:OAI-PMH/oai:ListIdentifiers/oai:header"/>
          <xsl:apply-templates select="//oai:resumptionToken"/>
        </main>
      </body>
    </html>
  </xsl:template>
  <xsl:template match="oai:error">
    <div class="error"><code><xsl:value-of select="@code"/></code>: <xsl:value-of select="."/></div>
  </xsl:template>
  <xsl:template match="oai:Identify/*">
    <p><b><xsl:value-of select="local-name()"/></b>: <xsl:value-of select="."/></p>
  </xsl:template>
  <xsl:template match="oai:metadataFormat">
    <p><b><xsl:value-of select="oai:metadataPrefix"/></b>: <xsl:value-of select="oai:schema"/></p>
  </xsl:template>
  <xsl:template match="oai:set">
    <p><a href="?verb=ListRecords&amp;metadataPrefix=oai_dc&amp;set={oai:setSpec}"><xsl:value-of select="oai:setSpec"/></a>: <xsl:value-of select="oai:setName"/></p>
  </xsl:template>
  <xsl:template match="oai:header">
    <div class="record">
      <h2><xsl:value-of select="oai:identifier"/></h2>
      <p class="meta"><xsl:value-of select="oai:datestamp"/>
        <xsl:if test="@status='deleted'"> · <span class="deleted">deleted</span></xsl:if>
        <xsl:for-each select="oai:setSpec"> · set <xsl:value-of select="."/></xsl:for-each></p>
    </div>
  </xsl:template>
  <xsl:template match="oai:record">
    <div class="record">
      <h2><xsl:value-of select="oai:header/oai:identifier"/></h2>
      <p class="meta"><xsl:value-of select="oai:header/oai:datestamp"/>
        <xsl:if test="oai:header/@status='deleted'"> · <span class="deleted">deleted</span></xsl:if></p>
      <table>
        <xsl:for-each select="oai:metadata//dc:*">
          <tr><th><xsl:value-of select="local-name()"/></th><td><xsl:value-of select="."/></td></tr>
        </xsl:for-each>
      </table>
    </div>
  </xsl:template>
  <xsl:template match="oai:resumptionToken">
    <div class="pager">
      <span class="meta">cursor <xsl:value-of select="@cursor"/> of <xsl:value-of select="@completeListSize"/></span>
      <xsl:if test="normalize-space(.) != ''">
        <a class="button" href="?verb={/oai:OAI-PMH/oai:request/@verb}&amp;resumptionToken={.}">Next page</a>
      </xsl:if>
    </div>
  </xsl:template>
</xsl:stylesheet>
