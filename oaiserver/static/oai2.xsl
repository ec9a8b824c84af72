<?xml version="1.0" encoding="UTF-8"?>
<!-- Renders OAI-PMH responses as HTML in browsers that still apply XSLT. The same view is
     rendered on the server at /oai/view, for browsers that no longer do. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:oai="http://www.openarchives.org/OAI/2.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
    exclude-result-prefixes="oai dc">
  <xsl:output method="html" encoding="UTF-8" indent="yes"/>
  <xsl:template match="/">
    <html>
      <head>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title>OAI-PMH <xsl:value-of select="oai:OAI-PMH/oai:request/@verb"/></title>
        <link rel="stylesheet" href="static/style.css"/>
      </head>
      <body>
        <header class="site"><a href="./">Repository home</a></header>
        <main>
          <h1><xsl:value-of select="oai:OAI-PMH/oai:request/@verb"/></h1>
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
